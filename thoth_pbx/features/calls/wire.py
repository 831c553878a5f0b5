"""WhatsApp calls as app.py wires them: the Stasis app, the call log jobs in Bitrix24, the calls API."""

from __future__ import annotations

from dataclasses import dataclass

from thoth_pbx.features.calls.http import calls_routes
from thoth_pbx.features.calls.jobs import CallJobs, register_call_jobs
from thoth_pbx.features.calls.leadership import STOP_TRIES, AdvisoryLock, StasisOwnership, lock_key, step_down
from thoth_pbx.features.calls.notifier import BitrixCallNotifier, store_bitrix_call_id
from thoth_pbx.features.calls.stasis import StasisCalls
from thoth_pbx.features.deps import AsteriskLink, Deps, Wired
from thoth_pbx.features.portal import Portals
from thoth_pbx.store.changes import TableChanges


@dataclass(frozen=True)
class StasisApp:
    """The Stasis app on one Asterisk: its calls, and who owns it (None: no election, SQLite or
    no ARI configured)."""

    asterisk: str
    calls: StasisCalls
    owner: StasisOwnership | None


async def _stop_all(parts: list[Wired]) -> None:
    for part in reversed(parts):
        await part.stop()


def wire(deps: Deps, portals: Portals, endpoint_prefix: str) -> tuple[list[StasisApp], CallJobs, Wired]:
    """`endpoint_prefix`: how operators are dialled, `PJSIP/<trunk endpoint>` (from the trunk).
    One Stasis app per configured Asterisk, the first server first; each connects its ARI only
    while this instance owns that server's app (leadership.py)."""
    settings = deps.settings
    jobs = CallJobs(deps.outbox)
    register_call_jobs(deps.outbox, portals, on_registered=store_bitrix_call_id)
    notifier = BitrixCallNotifier(deps.sessions, jobs, portals, settings.calls)
    apps: list[StasisApp] = []
    parts: list[Wired] = []
    for link in deps.asterisks:
        app, part = _wire_one(deps, link, notifier, endpoint_prefix)
        apps.append(app)
        parts.append(part)

    def start() -> None:
        for part in parts:
            part.start()

    routes = calls_routes(deps.sessions)
    return apps, jobs, Wired(routes=routes, start=start, stop=lambda: _stop_all(parts))


def _wire_one(
    deps: Deps, link: AsteriskLink, notifier: BitrixCallNotifier, endpoint_prefix: str
) -> tuple[StasisApp, Wired]:
    settings, ari = deps.settings, link.ari
    # what a call context is copied from: phone, portal (settings, status), user map
    context_changes = TableChanges(deps.engine, ("phone", "app_instance", "bitrix_user"))
    calls = StasisCalls(
        ari,
        deps.sessions,
        notifier,
        recordings_dir=settings.recordings_dir,
        changes=context_changes,
        endpoint_prefix=endpoint_prefix,
        asterisk=link.stored,
    )
    ari.on_connect = calls.resync
    deps.outbox.defer_to(calls.announced)  # a burst's registers leave before outcomes are stored
    if link.server.ari is None:  # no Asterisk: nothing to own
        ari.on_event = calls.on_event
        return StasisApp(link.server.name, calls, None), Wired(stop=calls.stop)

    asterisk = link.server.ari.base_url
    retry_s = settings.stasis_retry_seconds

    async def deposed() -> None:  # the call tasks first (the calls live on in Asterisk), then ARI
        await step_down(calls.stop, ari.stop, within=STOP_TRIES * retry_s)

    lock = AdvisoryLock.for_engine(deps.engine, lock_key(asterisk, ari.app), retry_s=retry_s)
    owner = StasisOwnership(asterisk, lock, ari.start, deposed, retry_s=retry_s)
    ari.on_event = owner.gate(calls.on_event)
    return StasisApp(link.server.name, calls, owner), Wired(start=owner.start, stop=owner.stop)
