"""WhatsApp calls as app.py wires them: the Stasis app, the call log jobs in Bitrix24, the calls API."""

from __future__ import annotations

from thoth_pbx.features.calls.http import calls_routes
from thoth_pbx.features.calls.jobs import CallJobs, register_call_jobs
from thoth_pbx.features.calls.leadership import STOP_TRIES, AdvisoryLock, StasisOwnership, lock_key, step_down
from thoth_pbx.features.calls.notifier import BitrixCallNotifier, store_bitrix_call_id
from thoth_pbx.features.calls.stasis import StasisCalls
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.portal import Portals
from thoth_pbx.store.changes import TableChanges


def wire(
    deps: Deps, portals: Portals, endpoint_prefix: str
) -> tuple[StasisCalls, CallJobs, Wired, StasisOwnership | None]:
    """`endpoint_prefix`: how operators are dialled, `PJSIP/<trunk endpoint>` (from the trunk).
    The part started connects ARI only while this instance owns the Stasis app (leadership.py)."""
    settings = deps.settings
    jobs = CallJobs(deps.outbox)
    register_call_jobs(deps.outbox, portals, on_registered=store_bitrix_call_id)
    notifier = BitrixCallNotifier(deps.sessions, jobs, portals, settings.calls)
    # what a call context is copied from: phone, portal (settings, status), user map
    context_changes = TableChanges(deps.engine, ("phone", "app_instance", "bitrix_user"))
    calls = StasisCalls(
        deps.ari,
        deps.sessions,
        notifier,
        recordings_dir=settings.recordings_dir,
        changes=context_changes,
        endpoint_prefix=endpoint_prefix,
    )
    deps.ari.on_connect = calls.resync
    routes = calls_routes(deps.sessions)
    if settings.ari is None:  # no Asterisk: nothing to own
        deps.ari.on_event = calls.on_event
        return calls, jobs, Wired(routes=routes, stop=calls.stop), None

    asterisk = settings.ari.base_url
    retry_s = settings.stasis_retry_seconds

    async def deposed() -> None:  # the call tasks first (the calls live on in Asterisk), then ARI
        await step_down(calls.stop, deps.ari.stop, within=STOP_TRIES * retry_s)

    lock = AdvisoryLock.for_engine(deps.engine, lock_key(asterisk, deps.ari.app), retry_s=retry_s)
    owner = StasisOwnership(asterisk, lock, deps.ari.start, deposed, retry_s=retry_s)
    deps.ari.on_event = owner.gate(calls.on_event)
    return calls, jobs, Wired(routes=routes, start=owner.start, stop=owner.stop), owner
