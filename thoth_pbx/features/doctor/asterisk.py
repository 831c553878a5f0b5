"""Asterisk checks over AMI and ARI: modules, transport, NAT, identify, dialplan, permissions.

Each `*_verdicts` function is pure (it judges what was read); the `read_*` coroutines do the
reading. Facts: docs/pbx.md (what the trunk writes), the Asterisk fact sheet (AMI actions,
PJSIPShowEndpoint's TransportDetail/IdentifyDetail, ARI read_only users).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thoth_pbx.clients.asterisk.ami import AmiActionFailed, AmiClient, AmiError
from thoth_pbx.clients.asterisk.ari import AriClient, AriError
from thoth_pbx.features.doctor.inputs import TrunkFacts
from thoth_pbx.features.doctor.verdicts import Verdict, cannot, fail, ok, warn

Event = Mapping[str, Any]


@dataclass(frozen=True)
class Module:
    label: str
    files: tuple[str, ...]  # any one of them loaded is enough
    why: str


MODULES = (
    Module("chan_pjsip", ("chan_pjsip.so",), "the PJSIP channel driver carries every WhatsApp call"),
    Module("res_pjsip", ("res_pjsip.so",), "PJSIP itself: the TLS transport, endpoints, identify"),
    Module("res_srtp", ("res_srtp.so",), "SDES-SRTP: Meta sends and expects only encrypted audio"),
    Module("opus format", ("res_format_attr_opus.so",), "the Opus SDP attributes Meta offers (fmtp)"),
    Module(
        "opus codec",
        ("codec_opus_open_source.so", "codec_opus.so"),
        "Opus transcoding: Meta speaks only Opus, operators' phones usually not",
    ),
    Module("res_ari", ("res_ari.so",), "ARI: how thoth-pbx takes each call"),
    Module("res_stasis", ("res_stasis.so",), "Stasis: the application side of ARI"),
    Module("app_stasis", ("app_stasis.so",), "the Stasis() dialplan application in from-meta"),
)

# AMI actions thoth-pbx sends (write permission `system,config,command` covers them; docs/pbx.md)
AMI_ACTIONS = ("Ping", "Reload", "PJSIPShowEndpoint", "Command")
AMI_READ = ("system",)  # FullyBooted and Reload events


# ------------------------------------------------------------------ modules


async def read_modules(ami: AmiClient) -> dict[str, bool]:
    """ModuleCheck for every file of MODULES: True when loaded."""
    out: dict[str, bool] = {}
    for module in MODULES:
        for name in module.files:
            try:
                await ami.action_ok({"Action": "ModuleCheck", "Module": name})
                out[name] = True
            except AmiActionFailed:
                out[name] = False
    return out


def module_verdicts(loaded: Mapping[str, bool]) -> list[Verdict]:
    out = []
    for module in MODULES:
        have = [name for name in module.files if loaded.get(name)]
        if have:
            out.append(ok("asterisk.modules", f"{have[0]} is loaded", module.label))
        else:
            wanted = " or ".join(module.files)
            out.append(
                fail(
                    "asterisk.modules",
                    f"{wanted} is not loaded: {module.why}",
                    f"load it: `asterisk -rx 'module load {module.files[0]}'` and remove any `noload => "
                    f"{module.files[0]}` from modules.conf (Debian: package asterisk-modules)",
                    module.label,
                )
            )
    return out


# ------------------------------------------------------------------ the trunk objects in Asterisk


async def read_endpoint(ami: AmiClient, endpoint: str) -> list[dict[str, Any]] | None:
    """PJSIPShowEndpoint's events, or None when Asterisk has no such endpoint."""
    try:
        return [dict(e) for e in await ami.event_list({"Action": "PJSIPShowEndpoint", "Endpoint": endpoint})]
    except AmiActionFailed:
        return None


def detail(events: Sequence[Event] | None, kind: str) -> Event | None:
    for event in events or ():
        if event.get("Event") == kind:
            return event
    return None


def _bind_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def transport_verdict(settings: TrunkFacts, transport: Event | None, connect_error: str | None, target: str) -> Verdict:
    """The transport is loaded with our bind, and something answers TLS there."""
    check = "transport.bound"
    want = _bind_text(settings.bind_address, settings.bind_port)
    apply = "run `thoth-pbx pbx apply`, then restart Asterisk if it says restart_required"
    if transport is None:
        return fail(
            check,
            f"Asterisk has no transport for endpoint {settings.endpoint_name} (the trunk is not applied, or the "
            "transport failed to load: bad cert_file/priv_key_file, port taken)",
            f"{apply}; look for 'Transport' errors in Asterisk's log",
        )
    bind, protocol = str(transport.get("Bind", "")), str(transport.get("Protocol", "")).lower()
    if protocol != "tls":
        return fail(check, f"transport {transport.get('ObjectName')} is {protocol or '?'}, not tls", apply)
    if bind != want:
        return fail(
            check,
            f"Asterisk's transport is bound to {bind}, the trunk says {want}",
            "restart Asterisk when convenient (`thoth-pbx pbx restart --when-convenient`): transports change only at start",
        )
    if connect_error is not None:
        return fail(
            check,
            f"Asterisk reports bind {bind}, but no TLS handshake succeeded at {target}: {connect_error}",
            "check that the transport started (Asterisk log at start: 'Transport ... failed'), that cert_file and "
            "priv_key_file are readable by Asterisk, and that nothing else holds the port",
        )
    return ok(check, f"transport {transport.get('ObjectName')} is bound to {bind} and answers TLS at {target}")


def probe_host(settings: TrunkFacts, ami_host: str | None) -> str:
    """Where to knock: the bind address, or the AMI host (Asterisk's machine) for a wildcard bind."""
    address = settings.bind_address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.is_unspecified:
        return ami_host or ("::1" if ip.version == 6 else "127.0.0.1")
    return address


def external_verdict(settings: TrunkFacts, transport: Event | None) -> Verdict:
    """With local_net, Asterisk rewrites SIP and SDP for outside peers only if the external
    addresses are set; without them Meta gets private addresses and the audio never arrives."""
    check = "transport.nat"
    live_local = str((transport or {}).get("LocalNet", "") or "").strip()
    local = list(settings.local_net) or ([live_local] if live_local else [])
    signaling = settings.external_signaling_address or str((transport or {}).get("ExternalSignalingAddress") or "")
    media = settings.external_media_address or str((transport or {}).get("ExternalMediaAddress") or "")
    if not local:
        if _private_bind(settings.bind_address):
            return warn(
                check,
                f"the transport binds the private address {settings.bind_address} and no local_net is set",
                "behind NAT set local_net (your LAN ranges) and external_signaling_address/external_media_address "
                "(the public name or IP), then `thoth-pbx pbx apply` and restart Asterisk",
            )
        return ok(check, "no local_net: Asterisk treats every peer as outside (right for a PBX with a public address)")
    missing = [
        name
        for name, value in (("external_signaling_address", signaling), ("external_media_address", media))
        if not value or value in ("0.0.0.0", "(null)")
    ]
    if missing:
        return fail(
            check,
            f"local_net is set ({', '.join(local)}) but {' and '.join(missing)} is not: Meta would get private "
            "addresses in SIP/SDP and hear nothing",
            f"set {' and '.join(missing)} to the public name or IP of this PBX, then `thoth-pbx pbx apply` and restart Asterisk",
        )
    return ok(
        check, f"local_net {', '.join(local)} with external addresses {signaling} (signalling) and {media} (media)"
    )


def _private_bind(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_private and not ip.is_loopback and not ip.is_unspecified


# ------------------------------------------------------------------ identify


def read_ranges_file(path: Path) -> list[str]:
    """config/meta-ip-ranges.txt: one network per line, `#` comments."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry)
    return out


def _networks(items: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return out


def identify_verdict(meta_ranges: Sequence[str], identify: Event | None, source: str) -> Verdict:
    """Every Meta range must fall inside a `match` Asterisk has loaded: an INVITE from an
    uncovered address is not identified as Meta and lands in the default context (or 401s)."""
    check = "identify.meta_ranges"
    apply = (
        "run `thoth-pbx pbx apply` (identify_match unset uses the ranges file; a list of your own must cover them all)"
    )
    if identify is None:
        return fail(check, "Asterisk has no identify for the trunk endpoint: Meta's INVITEs are not recognised", apply)
    live = _networks(re.split(r"[,\s]+", str(identify.get("Match", ""))))
    missing = []
    for text in meta_ranges:
        wanted = _networks([text])
        if not wanted:
            continue
        net = wanted[0]
        if not any(net.version == have.version and net.subnet_of(have) for have in live):  # type: ignore[arg-type]
            missing.append(text)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        return fail(
            check,
            f"{len(missing)} of {len(meta_ranges)} Meta ranges in {source} are not matched by Asterisk's identify: {shown}",
            apply,
        )
    return ok(check, f"Asterisk's identify covers all {len(meta_ranges)} Meta ranges of {source}")


# ------------------------------------------------------------------ dialplan and includes


def include_verdicts(files: Mapping[str, Mapping[str, Any]], mode: str) -> list[Verdict]:
    """From the trunk status: each of our files exists and an admin file #includes it."""
    out = []
    for name, info in files.items():
        if not info.get("exists"):
            out.append(fail("config.includes", f"{name} does not exist", "run `thoth-pbx pbx apply`", name))
        elif not info.get("included_from"):
            out.append(
                fail(
                    "config.includes",
                    f"{name} exists but no file includes it ({mode} mode), so Asterisk never reads it",
                    "run `thoth-pbx pbx apply` (it adds one `#tryinclude` line), or add "
                    f"`#tryinclude {name}` to the file that should include it",
                    name,
                )
            )
        else:
            out.append(ok("config.includes", f"{name} is included from {info['included_from']}", name))
    return out


def applied_verdict(status: Mapping[str, Any]) -> Verdict:
    """From the trunk status: is what Asterisk runs what the settings and phones render?"""
    check = "trunk.applied"
    apply = "run `thoth-pbx pbx apply`"
    if status.get("render_error"):
        err = status["render_error"]
        return fail(
            check,
            f"the trunk does not render: {err.get('field')}: {err.get('message')}",
            "fix that setting, then apply",
        )
    pending = status.get("restart_pending") or []
    mismatches = status.get("live_mismatches") or []
    if pending:
        return warn(
            check,
            f"{len(pending)} transport option(s) wait for an Asterisk restart",
            "`thoth-pbx pbx restart --when-convenient`",
        )
    if mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        return fail(
            check, f"Asterisk runs something else than our file says: {mismatches[0].get('message')}{more}", apply
        )
    if status.get("apply_needed"):
        return warn(check, "the settings or phones changed since the last apply: Asterisk runs the old trunk", apply)
    if status.get("drift"):
        return warn(check, "our files were edited by hand since the last apply (the next apply overwrites them)", apply)
    return ok(check, "Asterisk runs the trunk as the settings and phones render it")


def dialplan_verdict(context: str, app: str, shown: str) -> Verdict:
    check = "dialplan.context"
    fix = "run `thoth-pbx pbx apply` (it writes and reloads extensions_thoth.conf)"
    if not shown.strip() or "There is no existence" in shown:
        return fail(check, f"Asterisk has no dialplan context {context}: Meta's calls have nowhere to go", fix)
    lines = shown.splitlines()
    missing = [p for p in ("'_X.'", "'_+X.'") if not any(line.strip().startswith(p) for line in lines)]
    if missing:
        return fail(
            check,
            f"context {context} lacks the pattern(s) {', '.join(missing)} (Meta dials +E.164, which _X. alone does not match)",
            fix,
        )
    if f"Stasis({app}" not in shown:
        return fail(check, f"context {context} does not send calls to Stasis({app})", fix)
    return ok(check, f"context {context} matches _X. and _+X. and hands calls to Stasis({app})")


# ------------------------------------------------------------------ permissions


async def read_ami_permissions(ami: AmiClient, user: str) -> tuple[set[str], str | None]:
    """(actions this user may send, its `read perm:` line or None when unreadable)."""
    reply = await ami.action_ok({"Action": "ListCommands"})
    actions = {str(k).lower() for k in reply.keys()} - {"response", "actionid", "message"}
    read = None
    try:
        shown = await ami.command(f"manager show user {user}")
        match = re.search(r"read perm:\s*(\S*)", shown)
        read = match.group(1) if match else None
    except AmiError:
        pass
    return actions, read


def ami_verdict(actions: set[str], read: str | None, user: str) -> Verdict:
    check = "ami.permissions"
    fix = f"in manager.conf, [{user}]: `read = system,call` and `write = system,config,command`, then `manager reload`"
    missing = [a for a in AMI_ACTIONS if a.lower() not in actions]
    if missing:
        return fail(check, f"AMI user {user} may not send {', '.join(missing)}", fix)
    if read is None:
        return warn(
            check,
            f"AMI user {user} may send {', '.join(AMI_ACTIONS)}; its read permissions could not be read "
            "(`manager show user` gave nothing)",
            fix,
        )
    classes = {c.strip().lower() for c in read.split(",")}
    lacking = [c for c in AMI_READ if c not in classes and "all" not in classes]
    if lacking:
        return warn(
            check,
            f"AMI user {user} lacks read permission {', '.join(lacking)} (no FullyBooted/Reload events)",
            fix,
        )
    return ok(check, f"AMI user {user} may send {', '.join(AMI_ACTIONS)} and reads {read}")


async def read_ari_permissions(ari: AriClient) -> tuple[int | None, int | None, str | None]:
    """(status of a GET, status of a harmless POST, error). The POST sets no variable: a writer
    gets 400 "Variable name is required", a read_only user 403 before anything runs."""
    read_status: int | None
    try:
        await ari.request("GET", "/asterisk/info")
        read_status = 200
    except AriError as exc:
        if exc.status == 0:
            return None, None, exc.message
        read_status = exc.status
    try:
        await ari.request("POST", "/asterisk/variable")
        write_status: int | None = 200
    except AriError as exc:
        write_status = exc.status or None
    return read_status, write_status, None


def ari_verdict(read_status: int | None, write_status: int | None, error: str | None, user: str) -> Verdict:
    check = "ari.permissions"
    fix = f"in ari.conf, [{user}]: `type = user`, `read_only = no` and the password thoth-pbx has; then `module reload res_ari.so`"
    if error is not None:
        return fail(check, f"ARI cannot be reached: {error}", "check ari_url, http.conf (enabled, bindaddr, bindport)")
    if read_status == 401:
        return fail(check, f"ARI refuses user {user} (401): wrong user or password", fix)
    if read_status != 200:
        return fail(check, f"ARI answered {read_status} to GET /asterisk/info", fix)
    if write_status == 403:
        return fail(check, f"ARI user {user} is read_only: thoth-pbx cannot answer, bridge or dial", fix)
    if write_status in (400, 200):
        return ok(check, f"ARI user {user} may read and write")
    return warn(check, f"ARI answered {write_status} to a write probe; write access is unclear", fix)


async def read_system_name(ami: AmiClient) -> str:
    """`SystemName` of AMI's CoreSettings (asterisk.conf `systemname`; empty when unset)."""
    answer = await ami.action_ok({"Action": "CoreSettings"})
    return str(answer.get("SystemName") or "").strip()


def system_name_verdict(names: Mapping[str, str | None]) -> Verdict:
    """Several servers (docs/scaling.md): each names itself with a distinct `systemname`, or two
    of them can give two calls the same unique id (our EXTERNAL_CALL_ID). `names`: server ->
    its SystemName ("" unset, None: its AMI could not be asked)."""
    fix = "set a distinct systemname in the [options] of asterisk.conf on every server, then restart Asterisk"
    unknown = sorted(server for server, name in names.items() if name is None)
    unset = sorted(server for server, name in names.items() if name == "")
    seen: dict[str, list[str]] = {}
    for server, name in names.items():
        if name:
            seen.setdefault(name, []).append(server)
    shared = sorted(f"{name!r} on {', '.join(servers)}" for name, servers in seen.items() if len(servers) > 1)
    if unset or shared:
        said = ([f"no systemname on {', '.join(unset)}"] if unset else []) + [
            f"the same systemname {s}" for s in shared
        ]
        return warn("asterisk.systemname", "; ".join(said) + ": two servers may give two calls the same id", fix)
    if unknown:
        return cannot("asterisk.systemname", f"AMI of {', '.join(unknown)} is not connected", "see ami.connection")
    return ok(
        "asterisk.systemname", "each server has its own systemname: " + ", ".join(f"{s} {n}" for s, n in names.items())
    )
