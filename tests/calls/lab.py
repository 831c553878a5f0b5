"""The call lab: our Asterisk (business side) and a second Asterisk playing Meta + phones.

Meta's side (127.0.0.2) dials our TLS transport like WhatsApp Business Calling does:
TLS to our port, SDES-SRTP, Opus only, INVITE to `+<business number>`, From
`+<caller>`, an `X-WA-Meta-WACID` header, and it answers our digest challenge with the
number's SIP password. The same instance also plays the operators' phones: our Asterisk
reaches `op<ext>` endpoints on it over UDP, and its `ops` context decides per extension
whether the phone answers, is busy, or rings forever.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import asterisk as harness
from tests.harness.asterisk import AsteriskInstance
from tests.support.tls import make_ca_and_certs

# operator extensions and what their phone does (context `ops` on the Meta instance)
PHONES_BEHAVIOUR = {
    "101": "answer",
    "102": "answer",
    "103": "busy",
    "104": "ring",  # never answers
    "105": "answer",
    "106": "ring",
}
for _n in range(200, 260):  # a pool of answering operators for load tests
    PHONES_BEHAVIOUR[str(_n)] = "answer"

# WhatsApp users our business calls (click-to-call), and what Meta answers for each: the
# SIP page's table (486 declined, 480 unreachable / no answer, 403 no approved permission).
CUSTOMERS_BEHAVIOUR = {
    "+79991000001": "answer",
    "+79991000002": "declined",  # 486
    "+79991000003": "unavailable",  # 480
    "+79991000004": "forbidden",  # 403
    "+79991000005": "ring",  # never answers (our side cancels: 487)
}
SIP_HOSTNAME = "pbx.test"  # the business's configured SIP hostname: Meta wants it as the From host


def chroot_path(host_path: Path) -> str:
    """Asterisk runs in the chroot: `<root>/thoth/instances/...` is `/thoth/instances/...` there."""
    parts = host_path.parts
    return "/" + "/".join(parts[parts.index("thoth") :])


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class CallLab:
    business: AsteriskInstance
    meta: AsteriskInstance
    tls_port: int
    meta_tls_port: int
    cert_file: str  # chroot paths for our trunk settings
    key_file: str
    ca_file: str
    business_numbers: dict[str, str] = field(default_factory=dict)  # number -> sip password

    def trunk_settings(self) -> dict[str, Any]:
        """Trunk settings for our apply: real TLS on loopback, Meta identified by 127.0.0.2."""
        return {
            "bind_address": "127.0.0.1",
            "bind_port": self.tls_port,
            "cert_file": self.cert_file,
            "priv_key_file": self.key_file,
            "ca_list_file": self.ca_file,
            "identify_match": ["127.0.0.2"],
            "contact": f"sip:127.0.0.2:{self.meta_tls_port};transport=tls",
            "tos": None,
            "cos": None,
            "qualify_frequency": 0,
            # while thoth-pbx is not connected, calls still ring operator 102 (dialplan fallback)
            "fallback_dial": "PJSIP/102",
            "fallback_timeout": 20,
        }

    def add_business_number(self, number: str, password: str) -> None:
        """Teach the Meta side the digest credentials of one business number (like Meta holds them)."""
        self.business_numbers[number] = password
        self._write_meta_numbers()
        self.meta.cli("module reload res_pjsip.so")

    def _write_meta_numbers(self) -> None:
        lines = []
        for number, password in self.business_numbers.items():
            digits = number.lstrip("+")
            lines += [
                f"[biz{digits}]",
                "type=auth",
                "auth_type=userpass",
                f"username={digits}",
                f"password={password}",
                "",
                f"[biz{digits}]",
                "type=aor",
                f"contact=sip:127.0.0.1:{self.tls_port}\\;transport=tls",
                "",
                f"[biz{digits}]",
                "type=endpoint",
                "transport=meta-tls",
                "context=caller",
                "disallow=all",
                "allow=opus",
                f"aors=biz{digits}",
                f"outbound_auth=biz{digits}",
                "from_domain=wa.meta.vc",
                "direct_media=no",
                "media_encryption=sdes",
                "rtp_symmetric=yes",
                "send_connected_line=no",
                "timers=no",
                "",
                # business-initiated calls: identified by the From user (the business number),
                # challenged for the number's digest credentials like Meta does
                f"[{number}]",
                "type=endpoint",
                "transport=meta-tls",
                "context=wa-users",
                "disallow=all",
                "allow=opus",
                f"auth=biz{digits}",
                "direct_media=no",
                "media_encryption=sdes",
                "rtp_symmetric=yes",
                "send_connected_line=no",
                "timers=no",
                "",
            ]
        (self.meta.config_dir / "pjsip_meta_numbers.conf").write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ placing calls

    def _meta_ari(self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        req = urllib.request.Request(
            f"{self.meta.ari_base}/ari{path}{query}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        token = f"{self.meta.ari_user}:{self.meta.ari_password}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def whatsapp_call(
        self,
        business: str,
        caller: str,
        *,
        wacid: str | None = None,
        answer_after: int = 0,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Meta calls our business number; the WhatsApp user's side answers with Echo (media both ways).

        `caller` is the From user: `+<digits>`, or a BSUID (`US.1349...`) for a user with a
        username; `headers` are added to the INVITE as given (e.g. `X-WA-Meta-User-Id`,
        `X-WA-Meta-User-Name`, `X-WA-Meta-User-Country-Code`; leave one out and it is absent)."""
        wacid = wacid or f"wacid.{uuid.uuid4().hex}"
        digits = business.lstrip("+")
        added = {"X-WA-Meta-WACID": wacid, **(headers or {})}
        channel = self._meta_ari(
            "POST",
            "/channels",
            params={
                "endpoint": f"PJSIP/{business}@biz{digits}",
                "context": "caller",
                "extension": "s",
                "priority": "1",
                # "name" <number>: a bare BSUID would be parsed as a caller name, not a number
                "callerId": f'"{caller}" <{caller}>',
                "timeout": "60",
            },
            body={"variables": {f"PJSIP_HEADER(add,{name})": value for name, value in added.items()}},
        )
        return {"meta_channel": channel["id"], "wacid": wacid}

    def hangup_meta(self, meta_channel: str) -> None:
        try:
            self._meta_ari("DELETE", f"/channels/{meta_channel}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def business_channels(self) -> list[dict[str, str]]:
        """Channels live on our Asterisk (`core show channels concise`): name, state, id."""
        out = []
        for line in self.business.cli("core show channels concise").splitlines():
            fields = line.split("!")
            if len(fields) >= 14:
                out.append({"name": fields[0], "state": fields[4], "id": fields[-1]})
        return out

    def meta_channels(self) -> list[dict[str, Any]]:
        return self._meta_ari("GET", "/channels") or []


def start_lab(name: str = "calls") -> CallLab:
    business = harness.start_instance(f"thoth-{name}", host="127.0.0.1")
    meta = harness.start_instance(f"thoth-{name}-meta", host="127.0.0.2")
    tls_port, meta_tls_port = free_port("127.0.0.1"), free_port("127.0.0.2")
    ours = make_ca_and_certs(business.config_dir / "tls", {"pbx": ["pbx.test", "127.0.0.1"]})["pbx"]
    make_ca_and_certs(meta.config_dir / "tls", {"meta": ["wa.meta.vc", "127.0.0.2"]})["meta"]
    md = chroot_path(meta.config_dir)
    # operators: endpoints on our Asterisk whose phones live on the Meta instance (UDP)
    ops = []
    for ext in PHONES_BEHAVIOUR:
        ops += [
            f"[{ext}]",
            "type=aor",
            f"contact=sip:{ext}@127.0.0.2:{meta.sip_port}",
            "",
            f"[{ext}]",
            "type=endpoint",
            "transport=transport-udp",
            "context=default",
            "disallow=all",
            "allow=opus,ulaw",
            f"aors={ext}",
            "direct_media=no",
            "",
        ]
    (business.config_dir / "pjsip_operators.conf").write_text("\n".join(ops) + "\n")
    with (business.config_dir / "pjsip.conf").open("a") as fh:
        fh.write("\n#tryinclude pjsip_operators.conf\n")
    (meta.config_dir / "pjsip_meta.conf").write_text(
        "\n".join(
            [
                "[meta-tls]",
                "type=transport",
                "protocol=tls",
                f"bind=127.0.0.2:{meta_tls_port}",
                f"cert_file={md}/tls/meta.crt",
                f"priv_key_file={md}/tls/meta.key",
                f"ca_list_file={md}/tls/ca.crt",
                # pjsip checks the server name against the URI host (an IP here); Meta itself verifies
                # the certificate against the configured host name, which a loopback test cannot show.
                "method=tlsv1_2",
                "verify_server=no",
                "",
                "[from-business]",
                "type=endpoint",
                "transport=transport-udp",
                "context=ops",
                "disallow=all",
                "allow=ulaw,opus",
                "",
                "[from-business]",
                "type=identify",
                "endpoint=from-business",
                # only our UDP port (operators' phones): our TLS INVITEs to WhatsApp users are
                # identified by their From user, the business number
                f"match=127.0.0.1:{business.sip_port}",
                "",
                "#tryinclude pjsip_meta_numbers.conf",
                "",
            ]
        )
    )
    with (meta.config_dir / "pjsip.conf").open("a") as fh:
        fh.write("\n#tryinclude pjsip_meta.conf\n")
    ops_dialplan = ["[ops]"]
    for ext, behaviour in PHONES_BEHAVIOUR.items():
        if behaviour == "answer":
            ops_dialplan += [
                f"exten => {ext},1,Ringing()",
                " same => n,Wait(0.2)",
                " same => n,Answer()",
                " same => n,Echo()",
            ]
        elif behaviour == "busy":
            ops_dialplan += [f"exten => {ext},1,Busy(5)"]
        else:
            ops_dialplan += [f"exten => {ext},1,Ringing()", " same => n,Wait(600)"]
    ops_dialplan += ["", "[caller]", "exten => s,1,Answer()", " same => n,Echo()", ""]
    ops_dialplan += ["[wa-users]"]
    for number, behaviour in CUSTOMERS_BEHAVIOUR.items():
        ops_dialplan += [
            f"exten => {number},1,Set(FROM_HOST=${{PJSIP_HEADER(read,From)}})",
            # Meta: 403 when the From host is not the number's configured SIP server
            " same => n,Set(FROM_HOST=${CUT(FROM_HOST,@,2)})",
            " same => n,Set(FROM_HOST=${CUT(FROM_HOST,>,1)})",
            " same => n,Set(FROM_HOST=${CUT(FROM_HOST,\\;,1)})",  # ';' starts a comment in a .conf
            " same => n,Set(FROM_HOST=${CUT(FROM_HOST,:,1)})",
            f' same => n,ExecIf($["${{FROM_HOST}}" != "{SIP_HOSTNAME}"]?Hangup(21))',
            " same => n,Ringing()",
            " same => n,Wait(0.5)",
        ]
        ops_dialplan += {
            "answer": [" same => n,Answer()", " same => n,Echo()"],
            "declined": [" same => n,Hangup(17)"],
            "unavailable": [" same => n,Hangup(19)"],
            "forbidden": [" same => n,Hangup(21)"],
            "ring": [" same => n,Wait(600)"],
        }[behaviour]
    ops_dialplan += [""]
    (meta.config_dir / "extensions_lab.conf").write_text("\n".join(ops_dialplan) + "\n")
    with (meta.config_dir / "extensions.conf").open("a") as fh:
        fh.write("\n#tryinclude extensions_lab.conf\n")
    lab = CallLab(
        business, meta, tls_port, meta_tls_port, chroot_path(ours.cert), chroot_path(ours.key), chroot_path(ours.ca)
    )
    lab._write_meta_numbers()
    meta.restart()  # a new TLS transport needs a start, not a reload
    business.restart()
    return lab


def stop_lab(lab: CallLab) -> None:
    harness.release(lab.meta)
    harness.release(lab.business)
