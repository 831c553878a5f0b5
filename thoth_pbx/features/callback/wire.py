"""Click-to-call as app.py wires it: the Bitrix24 event, the start job, the permission replies,
and an ARI application of its own for the two legs."""

from __future__ import annotations

from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.clients.meta import permissions as perms
from thoth_pbx.clients.meta.inbox import InboxDispatcher
from thoth_pbx.features.callback.dialer import Dialer
from thoth_pbx.features.callback.http import callback_routes
from thoth_pbx.features.callback.service import KIND_START, CallbackService, CallLog, LastInbound
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.portal import BitrixService, guarded

EVENT = "ONEXTERNALCALLSTART"


def app_name(deps: Deps) -> str:
    return f"{deps.settings.ari_app}-callback"


def wire(
    deps: Deps,
    bitrix: BitrixService,
    call_log: CallLog,
    graph: perms.Graph,
    inbox: InboxDispatcher,
    last_inbound: LastInbound,
) -> tuple[CallbackService, Wired]:
    ari = AriClient(deps.settings.ari, app_name(deps))
    service: CallbackService
    dialer = Dialer(
        ari,
        lambda row_id, state, progress: service.report(row_id, state, progress),
        recordings_dir=deps.settings.recordings_dir,
    )
    service = CallbackService(deps.sessions, deps.outbox, call_log, graph, last_inbound, dialer)
    ari.on_event = dialer.on_event
    ari.on_connect = service.recover
    bitrix.app.on_event_inline(EVENT, service.on_call_start)
    deps.outbox.register(KIND_START, guarded(service.run_start))
    inbox.subscribe("message", service.on_message)

    async def stop() -> None:
        await service.stop()
        await ari.stop()

    return service, Wired(routes=callback_routes(deps.sessions), start=ari.start, stop=stop)
