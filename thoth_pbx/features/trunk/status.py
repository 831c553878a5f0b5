"""Trunk status: AMI state, live objects and reachability, last revision, drift.

Drift means our file on disk is not what the last apply left there (someone edited it by
hand); `apply_needed` means the current settings/phones render differently from disk;
`live_mismatches` lists what Asterisk runs that differs from the file on disk (e.g. a
transport change waiting for a restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thoth_pbx.clients.asterisk.ami import AmiClient, AmiError
from thoth_pbx.features.trunk import files as fs
from thoth_pbx.features.trunk import live
from thoth_pbx.features.trunk.apply import check_live
from thoth_pbx.features.trunk.conffile import ConfSyntaxError, parse
from thoth_pbx.features.trunk.render import FILES, PJSIP_FILE, Rendered
from thoth_pbx.features.trunk.verify import endpoint_names


def _files(config_dir: Path, mode: str, rendered: Rendered | None, last: dict[str, Any] | None) -> dict[str, Any]:
    recorded = (last or {}).get("files") or {}
    out: dict[str, Any] = {}
    for name in FILES:
        data = fs.read(config_dir / name)
        includer = fs.INCLUDERS[mode][name]
        includer_text = (fs.read(config_dir / includer) or b"").decode("utf-8", "replace")
        sha = fs.sha256(data)
        out[name] = {
            "exists": data is not None,
            "sha256": sha,
            "included_from": includer if fs.has_include(includer_text, name) else None,
            "drift": bool(recorded) and recorded.get(name) != sha,
            "apply_needed": rendered is not None and (data or b"") != rendered.files[name].encode(),
        }
    return out


def _summary(events: list[dict[str, Any]] | None) -> dict[str, Any]:
    if events is None:
        return {"loaded": False}
    out: dict[str, Any] = {"loaded": True, "contacts": []}
    for event in events:
        kind = event.get("Event")
        if kind == "EndpointDetail":
            out["device_state"] = event.get("DeviceState")
            out["active_channels"] = int(event.get("ActiveChannels") or 0)
        elif kind == "TransportDetail":
            out["transport"] = {
                "name": event.get("ObjectName"),
                "protocol": event.get("Protocol"),
                "bind": event.get("Bind"),
                "allow_reload": event.get("AllowReload"),
            }
        elif kind == "ContactStatusDetail":
            rtt = event.get("RoundtripUsec")
            out["contacts"].append(
                {
                    "uri": event.get("URI"),
                    "status": event.get("Status"),  # Reachable | Unreachable | NonQualified | Unknown
                    "rtt_ms": round(int(rtt) / 1000, 1) if rtt and str(rtt).isdigit() else None,
                }
            )
    reachable = [c["status"] for c in out["contacts"]]
    out["reachable"] = "Reachable" in reachable if reachable else None
    return out


async def collect(
    ami: AmiClient, config_dir: Path, mode: str, rendered: Rendered | None, last: dict[str, Any] | None
) -> dict[str, Any]:
    files = _files(config_dir, mode, rendered, last)
    report: dict[str, Any] = {
        "ami": ami.status.as_json(),
        "mode": mode,
        "config_dir": str(config_dir),
        "files": files,
        "drift": any(f["drift"] for f in files.values()),
        "apply_needed": any(f["apply_needed"] for f in files.values()),
        "last_revision": {k: v for k, v in (last or {}).items() if k != "files"} or None,
        "endpoints": {},
        "live_mismatches": [],
        "restart_pending": [],
    }
    texts = fs.read_texts(config_dir, FILES)
    if not ami.connected:
        report["live_error"] = "AMI is not connected"
        return report
    try:
        names = endpoint_names(parse(texts[PJSIP_FILE]))
        events = await live.endpoint_events(ami, names)
        report["endpoints"] = {name: _summary(evs) for name, evs in events.items()}
        check = await check_live(ami, texts)
        report["live_mismatches"] = [m.as_json() for m in check.mismatches]
        report["restart_pending"] = [m.as_json() for m in check.pending_restart]
    except ConfSyntaxError as exc:
        report["live_error"] = f"{PJSIP_FILE} on disk does not parse: {exc}"
    except AmiError as exc:
        report["live_error"] = f"AMI: {exc}"
    return report
