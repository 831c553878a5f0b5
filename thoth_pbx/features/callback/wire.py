"""Click-to-call as app.py wires it: the Bitrix24 event, the start job, the permission replies,
and an ARI application of its own for the two legs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.clients.meta import permissions as perms
from thoth_pbx.clients.meta.inbox import InboxDispatcher
from thoth_pbx.features.callback.dialer import Dialer
from thoth_pbx.features.callback.http import callback_routes
from thoth_pbx.features.callback.service import KIND_START, CallbackService, CallLog, LastInbound
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.portal import BitrixService, guarded

EVENT = "ONEXTERNALCALLSTART"


class Ownership(Protocol):
    """The calls feature's Stasis ownership (calls/leadership.py): whether this instance owns the
    Asterisk's ARI applications now."""

    owner: bool


def app_name(deps: Deps) -> str:
    return f"{deps.settings.ari_app}-callback"


def wire(
    deps: Deps,
    bitrix: BitrixService,
    call_log: CallLog,
    graph: perms.Graph,
    inbox: InboxDispatcher,
    last_inbound: LastInbound,
    ownership: Ownership | None = None,
) -> tuple[CallbackService, Wired]:
    """With `ownership` (several instances on one PostgreSQL), our ARI application is connected
    only while this instance owns the Stasis app: Asterisk gives an application to one websocket
    at a time, so every instance connecting it would take it from the others."""
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

    if ownership is None:
        return service, Wired(routes=callback_routes(deps.sessions), start=ari.start, stop=stop)
    retry_s = deps.settings.stasis_retry_seconds
    follower: list[asyncio.Task[None]] = []

    async def follow() -> None:
        connected = False
        while True:
            if ownership.owner and not connected:
                ari.start()
                connected = True
            elif not ownership.owner and connected:
                await stop()  # the calls live on in Asterisk; the new owner re-attaches them
                connected = False
            await asyncio.sleep(retry_s)  # the next look at the ownership, not a synchronisation

    def start() -> None:
        follower.append(asyncio.get_running_loop().create_task(follow(), name="callback-ownership"))

    async def stop_following() -> None:
        for task in follower:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        follower.clear()
        await stop()

    return service, Wired(routes=callback_routes(deps.sessions), start=start, stop=stop_following)
