"""Safe apply: diff -> atomic write -> AMI reload -> verify -> roll back on mismatch.

Asterisk's reload says "Module Reloaded" even when it rejected an object and kept the
old one, so success here means "Asterisk reports every rendered option with the rendered
value". Outcomes:

* `unchanged` - the files on disk are already what we rendered: nothing written, no reload;
* `applied` - written, reloaded, every object verified;
* `restart_required` - everything verified except transport options that Asterisk cannot
  reload while the live transport has allow_reload=no; they take effect on restart;
* `rolled_back` - some object/option was not taken: the previous files were restored and
  reloaded, and `mismatches` says exactly what Asterisk refused;
* `failed` - AMI trouble; the previous files were restored.

This module knows files and AMI but no database: trunk/service.py records revisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thoth_pbx.clients.asterisk.ami import AmiClient, AmiError
from thoth_pbx.features.trunk import files as fs
from thoth_pbx.features.trunk import live, verify
from thoth_pbx.features.trunk.conffile import ConfSyntaxError, parse
from thoth_pbx.features.trunk.render import DIALPLAN_FILE, FILES, PJSIP_FILE, Rendered
from thoth_pbx.features.trunk.verify import Mismatch

log = logging.getLogger(__name__)

MODULES = {PJSIP_FILE: "res_pjsip.so", DIALPLAN_FILE: "pbx_config"}


@dataclass
class ApplyOutcome:
    result: str  # applied | unchanged | restart_required | rolled_back | failed
    message: str
    diff: str = ""
    changed: list[str] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    pending_restart: list[Mismatch] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    rollback_mismatches: list[Mismatch] | None = None
    files: dict[str, str | None] = field(default_factory=dict)  # our files' sha256 on disk afterwards
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result in ("applied", "unchanged", "restart_required")

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message": self.message,
            "changed": self.changed,
            "reloads": self.reloads,
            "mismatches": [m.as_json() for m in self.mismatches],
            "pending_restart": [m.as_json() for m in self.pending_restart],
            "unverified": self.unverified,
            "timings_ms": self.timings_ms,
        }
        if self.rollback_mismatches is not None:
            out["rollback_verified"] = not self.rollback_mismatches
            out["rollback_mismatches"] = [m.as_json() for m in self.rollback_mismatches]
        return out

    def as_json(self) -> dict[str, Any]:
        return {"result": self.result, "diff": self.diff, "files": self.files, **self.detail()}


@dataclass
class Verification:
    mismatches: list[Mismatch]
    pending_restart: list[Mismatch]
    unverified: list[str]


async def check_live(ami: AmiClient, texts: dict[str, str]) -> Verification:
    """Compare Asterisk's live objects with the given file texts (parsed)."""
    pjsip = parse(texts.get(PJSIP_FILE, ""))
    dialplan = parse(texts.get(DIALPLAN_FILE, ""))
    events = await live.endpoint_events(ami, verify.endpoint_names(pjsip))
    live_objects = verify.live_objects(e for evs in events.values() if evs for e in evs)
    mismatches = verify.compare_pjsip(pjsip, live_objects)
    intent = verify.dialplan_intent(dialplan)
    shown = await live.dialplan_show(ami, intent)
    mismatches += verify.compare_dialplan(intent, shown)
    pending = [
        m
        for m in mismatches
        if m.object_type == "transport"
        and m.option is not None
        and _reload_blocked(live_objects.get(("transport", m.object_name), {}))
    ]
    rest = [m for m in mismatches if m not in pending]
    _, other = verify.intent_sections(pjsip)
    unverified = [f"[{s.name}] type={s.type}" for s in other]
    return Verification(rest, pending, unverified)


def _reload_blocked(transport: dict[str, str]) -> bool:
    return transport.get("AllowReload", "").lower() in ("false", "no")


class Applier:
    """Applies rendered files to one Asterisk (config dir + AMI); one apply at a time."""

    def __init__(self, ami: AmiClient, config_dir: Path, mode: str, *, reload_timeout: float = 15.0) -> None:
        if mode not in fs.INCLUDERS:
            raise ValueError(f"unknown install mode {mode!r}")
        self.ami = ami
        self.config_dir = config_dir
        self.mode = mode
        self.reload_timeout = reload_timeout
        self._lock = asyncio.Lock()

    def plan(self, rendered: Rendered) -> list[fs.FileChange]:
        return fs.plan(self.config_dir, self.mode, rendered.files)

    async def apply(self, rendered: Rendered) -> ApplyOutcome:
        async with self._lock, fs.dir_lock(self.config_dir):
            return await self._apply(rendered)

    async def _apply(self, rendered: Rendered) -> ApplyOutcome:
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str) -> None:
            timings[name] = round((time.perf_counter() - started) * 1000, 3)

        changes = self.plan(rendered)
        diff = fs.diff(changes)
        changed = [c.name for c in changes]
        lap("plan")
        if not changes:
            return ApplyOutcome(
                "unchanged",
                "the files on disk already match the settings; no reload",
                files=self._hashes(),
                timings_ms=timings,
            )
        if not self.ami.connected:
            return ApplyOutcome(
                "failed",
                f"AMI is not connected ({self.ami.status.state}: "
                f"{self.ami.status.error or 'no connection'}); nothing was written",
                diff=diff,
                files=self._hashes(),
                timings_ms=timings,
            )
        fs.write_all(self.config_dir, changes)
        lap("write")
        modules = self._modules(changes)
        try:
            await self._reload(modules)
            lap("reload")
            check = await check_live(self.ami, rendered.files)
            lap("verify")
        except AmiError as exc:
            fs.restore_all(self.config_dir, changes)
            async with _suppress_ami():
                await self._reload(modules)
            log.error("pbx apply failed", extra={"error": str(exc)})
            return ApplyOutcome(
                "failed",
                f"AMI error during apply ({exc}); previous files restored",
                diff=diff,
                changed=changed,
                reloads=modules,
                files=self._hashes(),
                timings_ms=timings,
            )
        if check.mismatches:
            return await self._roll_back(changes, modules, check, diff, timings, lap)
        if check.pending_restart:
            options = ", ".join(sorted({f"{m.object_name}.{m.option}" for m in check.pending_restart}))
            message = (
                f"written and verified, but the transport change ({options}) needs an Asterisk restart "
                "because the live transport has allow_reload=no; run `thoth-pbx pbx restart --when-convenient`"
            )
            result = "restart_required"
        else:
            message, result = "written, reloaded and verified", "applied"
        log.info("pbx apply", extra={"result": result, "changed": changed, "ms": timings.get("verify")})
        return ApplyOutcome(
            result,
            message,
            diff=diff,
            changed=changed,
            reloads=modules,
            pending_restart=check.pending_restart,
            unverified=check.unverified,
            files=self._hashes(),
            timings_ms=timings,
        )

    async def _roll_back(self, changes, modules, check, diff, timings, lap) -> ApplyOutcome:  # type: ignore[no-untyped-def]
        fs.restore_all(self.config_dir, changes)
        after: Verification | None = None
        try:
            await self._reload(modules)
            after = await check_live(self.ami, fs.read_texts(self.config_dir, FILES))
        except (AmiError, ConfSyntaxError) as exc:
            log.error("pbx rollback reload failed", extra={"error": str(exc)})
        lap("rollback")
        what = "; ".join(str(m) for m in check.mismatches[:10])
        more = f" (and {len(check.mismatches) - 10} more)" if len(check.mismatches) > 10 else ""
        log.warning("pbx apply rolled back", extra={"mismatches": len(check.mismatches)})
        return ApplyOutcome(
            "rolled_back",
            f"Asterisk did not take the new config, previous files restored: {what}{more}",
            diff=diff,
            changed=[c.name for c in changes],
            reloads=modules,
            mismatches=check.mismatches,
            pending_restart=after.pending_restart if after else [],
            unverified=check.unverified,
            rollback_mismatches=after.mismatches if after else None,
            files=self._hashes(),
            timings_ms=timings,
        )

    def _modules(self, changes: list[fs.FileChange]) -> list[str]:
        includers = fs.INCLUDERS[self.mode]
        touched = {c.name for c in changes}
        modules = []
        for ours, module in MODULES.items():
            if ours in touched or includers[ours] in touched:
                modules.append(module)
        return modules

    async def _reload(self, modules: list[str]) -> None:
        for module in modules:
            await live.reload_module(self.ami, module, timeout=self.reload_timeout)

    def _hashes(self) -> dict[str, str | None]:
        return fs.disk_hashes(self.config_dir, FILES)


class _suppress_ami:
    """Best effort: a reload after restoring files may fail if AMI is gone; say so in logs only."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if exc is not None and isinstance(exc, AmiError):
            log.error("pbx reload after restore failed", extra={"error": str(exc)})
            return True
        return False
