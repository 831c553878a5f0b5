"""Safe apply against the real Asterisk 22: live objects, no-op, rollback, restart, modes.

What Asterisk loaded is read back through its CLI (`asterisk -rx`), not through our own
verify code, so these tests also check the verifier's verdicts.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

from tests.harness.asterisk import AsteriskInstance
from tests.integration.conftest import TlsFiles
from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.core.resources import data_dir
from thoth_pbx.features.trunk.apply import Applier
from thoth_pbx.features.trunk.render import DIALPLAN_FILE, PJSIP_FILE, TrunkPhone, parse_trunk, render

PHONE = TrunkPhone("+15551230000", "pa;ss>word", "pbx.example.com", 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trunk_settings(tls: TlsFiles, **overrides: Any) -> dict[str, Any]:
    """Loopback TLS with a test certificate; Meta "is" 127.0.0.2. A fresh transport each time."""
    return {
        "transport_name": f"tls-{free_port()}",
        "bind_address": "127.0.0.1",
        "bind_port": free_port(),
        "cert_file": tls.cert,
        "priv_key_file": tls.key,
        "ca_list_file": tls.ca,
        "identify_match": ["127.0.0.2", "69.171.251.0/255.255.255.0"],
        "contact": f"sip:127.0.0.2:{free_port()};transport=tls",
        "fallback_dial": "PJSIP/100",
        **overrides,
    }


def cli_fields(output: str) -> dict[str, str]:
    """`pjsip show endpoint|auth|aor|transport X` -> {option: value} (first occurrence)."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        match = re.match(r"^\s*([a-z0-9_]+)\s+:\s(.*)$", line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2).strip()
    return fields


async def test_apply_makes_objects_live_with_rendered_values(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles
) -> None:
    settings = parse_trunk(trunk_settings(asterisk_tls))
    outcome = await Applier(ami, asterisk_reset.config_dir, "plain").apply(render(settings, [PHONE], app="thoth-test"))
    assert outcome.result == "applied", outcome.as_json()
    assert outcome.reloads == ["res_pjsip.so", "pbx_config"] and outcome.mismatches == []

    endpoint = cli_fields(asterisk_reset.cli("pjsip show endpoint wa.meta.vc"))
    assert {
        k: endpoint[k]
        for k in (
            "context",
            "media_encryption",
            "direct_media",
            "rtp_symmetric",
            "timers",
            "rewrite_contact",
            "send_connected_line",
            "transport",
            "auth",
            "allow",
        )
    } == {
        "context": "from-meta",
        "media_encryption": "sdes",
        "direct_media": "false",
        "rtp_symmetric": "true",
        "timers": "no",
        "rewrite_contact": "false",
        "send_connected_line": "no",
        "transport": settings.transport_name,
        "auth": "wa-15551230000",
        "allow": "(opus)",
    }
    identify = asterisk_reset.cli("pjsip show identify wa.meta.vc")
    assert "127.0.0.2/32" in identify and "69.171.251.0/24" in identify
    outbound = cli_fields(asterisk_reset.cli("pjsip show endpoint wa-15551230000"))
    assert (outbound["from_user"], outbound["from_domain"], outbound["outbound_auth"]) == (
        "+15551230000",
        "pbx.example.com",
        "wa-15551230000",
    )
    auth = cli_fields(asterisk_reset.cli("pjsip show auth wa-15551230000"))
    assert (auth["username"], auth["password"]) == ("15551230000", "pa;ss>word")  # escaping survived
    with socket.create_connection(("127.0.0.1", settings.bind_port), timeout=5):
        pass  # the new TLS transport listens after a reload (no restart needed for a new one)

    dialplan = asterisk_reset.cli("dialplan show from-meta")
    assert "'_X.' =>" in dialplan and "'_+X.' =>" in dialplan
    assert (
        dialplan.count(
            "Stasis(thoth-test,${EXTEN},${THOTH_WACID},${THOTH_WA_USER_ID},${THOTH_WA_USER_NAME},${THOTH_WA_USER_CC})"
        )
        == 2
        and dialplan.count("Progress()") == 2
        and dialplan.count("Dial(PJSIP/100,60)") == 2
    )
    assert 'GotoIf($["${STASISSTATUS}" = "FAILED"]?fallback)' in dialplan


async def test_second_apply_without_change_does_no_reload(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles
) -> None:
    reloads: list[str] = []
    marker_seen = asyncio.Event()

    def on_reload(message: Any) -> None:
        reloads.append(str(message.get("Module")))
        if message.get("Module") == "logger":
            marker_seen.set()

    async def flush() -> list[str]:
        """Asterisk sends events in order: a marker reload flushes every reload before it."""
        marker_seen.clear()
        await ami.action_ok({"Action": "Reload", "Module": "logger"})
        await asyncio.wait_for(marker_seen.wait(), 10)
        seen = list(reloads)
        reloads.clear()
        return seen

    ami.on_event("Reload", on_reload)
    await flush()  # reloads the fixture's reset made may still be on their way
    applier = Applier(ami, asterisk_reset.config_dir, "plain")
    rendered = render(parse_trunk(trunk_settings(asterisk_tls)), [PHONE])
    assert (await applier.apply(rendered)).result == "applied"
    assert await flush() == ["res_pjsip.so", "pbx_config", "logger"]
    second = await applier.apply(rendered)
    assert second.result == "unchanged" and second.reloads == [] and second.diff == ""
    assert await flush() == ["logger"]


async def test_override_asterisk_rejects_is_rolled_back_and_previous_endpoint_stays(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles, override_dir: Path
) -> None:
    base = trunk_settings(asterisk_tls)
    applier = Applier(ami, asterisk_reset.config_dir, "plain")
    good = render(parse_trunk(base), [PHONE])
    assert (await applier.apply(good)).result == "applied"
    pjsip_before = (asterisk_reset.config_dir / PJSIP_FILE).read_bytes()

    shipped = (data_dir("asterisk_templates") / "endpoint.conf.j2").read_text()
    (override_dir / "endpoint.conf.j2").write_text(
        shipped.replace("disallow=all\n", "disallow=all\ndirect_media=maybe\n")
    )
    bad = render(parse_trunk({**base, "language": "de"}), [PHONE], override_dir=override_dir)
    outcome = await applier.apply(bad)

    assert outcome.result == "rolled_back", outcome.as_json()
    refused = {(m.object_type, m.object_name, m.option, m.expected) for m in outcome.mismatches}
    assert ("endpoint", "wa.meta.vc", "direct_media", "maybe") in refused
    assert "endpoint wa.meta.vc: direct_media" in outcome.message
    assert outcome.rollback_mismatches == []
    assert (asterisk_reset.config_dir / PJSIP_FILE).read_bytes() == pjsip_before
    live = cli_fields(asterisk_reset.cli("pjsip show endpoint wa.meta.vc"))
    assert (live["language"], live["direct_media"], live["media_encryption"]) == ("en", "false", "sdes")


async def test_first_apply_refused_by_asterisk_leaves_no_trace(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles
) -> None:
    config_dir = asterisk_reset.config_dir
    admin_pjsip = (config_dir / "pjsip.conf").read_bytes()
    rendered = render(parse_trunk(trunk_settings(asterisk_tls, codecs=["opus", "nosuchcodec"])), [PHONE])
    outcome = await Applier(ami, config_dir, "plain").apply(rendered)

    assert outcome.result == "rolled_back", outcome.as_json()
    assert {(m.object_type, m.object_name) for m in outcome.mismatches} >= {("endpoint", "wa.meta.vc")}
    assert not (config_dir / PJSIP_FILE).exists() and not (config_dir / DIALPLAN_FILE).exists()
    assert (config_dir / "pjsip.conf").read_bytes() == admin_pjsip
    assert "Unable to find object wa.meta.vc" in asterisk_reset.cli("pjsip show endpoint wa.meta.vc")


async def test_transport_change_reports_restart_required(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles
) -> None:
    base = trunk_settings(asterisk_tls, method="tlsv1_2")
    applier = Applier(ami, asterisk_reset.config_dir, "plain")
    assert (await applier.apply(render(parse_trunk(base), [PHONE]))).result == "applied"
    outcome = await applier.apply(render(parse_trunk({**base, "method": "tlsv1_3", "language": "de"}), [PHONE]))

    assert outcome.result == "restart_required", outcome.as_json()
    assert [(m.object_name, m.option, m.expected, m.actual) for m in outcome.pending_restart] == [
        (base["transport_name"], "method", "tlsv1_3", "tlsv1_2")
    ]
    assert "restart" in outcome.message and outcome.mismatches == []
    # the rest of the change is live; the transport keeps its old method until a restart
    assert cli_fields(asterisk_reset.cli("pjsip show endpoint wa.meta.vc"))["language"] == "de"
    assert cli_fields(asterisk_reset.cli(f"pjsip show transport {base['transport_name']}"))["method"] == "tlsv1_2"


async def test_plain_mode_keeps_admin_lines_byte_for_byte(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles
) -> None:
    config_dir = asterisk_reset.config_dir
    admin_pjsip = (
        config_dir / "pjsip.conf"
    ).read_bytes() + b"\n; admin's own aor\n[admin-aor]\ntype = aor\ncontact = sip:127.0.0.9 ; no newline"
    admin_ext = (config_dir / "extensions.conf").read_bytes() + b"\n[admin-ctx]\nexten => 1,1,Hangup()\n"
    (config_dir / "pjsip.conf").write_bytes(admin_pjsip)
    (config_dir / "extensions.conf").write_bytes(admin_ext)
    applier = Applier(ami, config_dir, "plain")
    settings = trunk_settings(asterisk_tls)
    assert (await applier.apply(render(parse_trunk(settings), [PHONE]))).result == "applied"
    assert (await applier.apply(render(parse_trunk({**settings, "language": "fr"}), [PHONE]))).result == "applied"

    assert (config_dir / "pjsip.conf").read_bytes() == admin_pjsip + b"\n#tryinclude pjsip_thoth.conf\n"
    assert (config_dir / "extensions.conf").read_bytes() == admin_ext + b"#tryinclude extensions_thoth.conf\n"
    assert "admin-aor" in asterisk_reset.cli("pjsip show aors")
    assert "admin-ctx" in asterisk_reset.cli("dialplan show admin-ctx")


async def test_freepbx_mode_with_missing_custom_files(
    asterisk_reset: AsteriskInstance, ami: AmiClient, asterisk_tls: TlsFiles
) -> None:
    config_dir = asterisk_reset.config_dir
    # FreePBX's generated files include the *_custom.conf files with a plain #include
    generated_pjsip = (config_dir / "pjsip.conf").read_bytes() + b"\n#include pjsip_custom.conf\n"
    generated_ext = (config_dir / "extensions.conf").read_bytes() + b"\n#include extensions_custom.conf\n"
    (config_dir / "pjsip.conf").write_bytes(generated_pjsip)
    (config_dir / "extensions.conf").write_bytes(generated_ext)
    assert not (config_dir / "pjsip_custom.conf").exists()

    outcome = await Applier(ami, config_dir, "freepbx").apply(
        render(parse_trunk(trunk_settings(asterisk_tls)), [PHONE])
    )

    assert outcome.result == "applied", outcome.as_json()
    assert (config_dir / "pjsip.conf").read_bytes() == generated_pjsip
    assert (config_dir / "extensions.conf").read_bytes() == generated_ext
    assert (config_dir / "pjsip_custom.conf").read_text() == "#tryinclude pjsip_thoth.conf\n"
    assert (config_dir / "extensions_custom.conf").read_text() == "#tryinclude extensions_thoth.conf\n"
    assert cli_fields(asterisk_reset.cli("pjsip show endpoint wa.meta.vc"))["context"] == "from-meta"
