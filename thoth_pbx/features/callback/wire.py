"""Click-to-call as app.py wires it: the Bitrix24 event, the start job, the permission replies,
and an ARI application of its own for the two legs."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.clients.meta import permissions as perms
from thoth_pbx.clients.meta.inbox import InboxDispatcher
from thoth_pbx.core.tasks import cancel_task
from thoth_pbx.features.callback.dialer import Dialer, Progress
from thoth_pbx.features.callback.http import callback_routes
from thoth_pbx.features.callback.service import KIND_START, CallbackService, CallLog, LastInbound, TemplatesOf
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
    owners: Sequence[Ownership | None] = (),
    templates: TemplatesOf | None = None,
) -> tuple[CallbackService, Wired]:
    """One ARI application of ours per configured Asterisk (a number's server dials it). With an
    ownership for a server (several instances on one PostgreSQL, `owners` in the order of
    `deps.asterisks`), its application is connected only while this instance owns that server's
    Stasis app: Asterisk gives an application to one websocket at a time, so every instance
    connecting it would take it from the others. `templates`: the messaging feature's
    synchronised templates of an account (callback may not import messaging's internals)."""
    service: CallbackService

    def report(row_id: int, state: str, progress: Progress) -> Awaitable[None]:
        return service.report(row_id, state, progress)

    dialers: dict[str | None, Dialer] = {}
    clients: list[tuple[str | None, AriClient, Ownership | None]] = []
    for n, link in enumerate(deps.asterisks):
        ari = AriClient(link.server.ari, app_name(deps))
        dialer = Dialer(ari, report, recordings_dir=deps.settings.recordings_dir)
        key = link.stored
        dialers[key] = dialer
        ari.on_event = dialer.on_event
        ari.on_connect = functools.partial(_recover, lambda: service, key)
        clients.append((key, ari, owners[n] if n < len(owners) else None))
    service = CallbackService(deps.sessions, deps.outbox, call_log, graph, last_inbound, dialers, templates)
    bitrix.app.on_event_inline(EVENT, service.on_call_start)
    deps.outbox.register(KIND_START, guarded(service.run_start))
    inbox.subscribe("message", service.on_message)
    retry_s = deps.settings.stasis_retry_seconds
    followers: list[asyncio.Task[None]] = []

    async def follow(key: str | None, ari: AriClient, ownership: Ownership) -> None:
        connected = False
        try:
            while True:
                if ownership.owner and not connected:
                    ari.start()
                    connected = True
                elif not ownership.owner and connected:
                    # the calls live on in Asterisk; the new owner re-attaches them
                    await service.stop(key)
                    await ari.stop()
                    connected = False
                await asyncio.sleep(retry_s)  # the next look at the ownership, not a synchronisation
        finally:
            if connected:
                await ari.stop()

    def start() -> None:
        for key, ari, ownership in clients:
            if ownership is None:
                ari.start()
            else:
                loop = asyncio.get_running_loop()
                followers.append(loop.create_task(follow(key, ari, ownership), name="callback-ownership"))

    async def stop() -> None:
        for task in followers:
            await cancel_task(task)
        followers.clear()
        await service.stop()
        for _key, ari, _ownership in clients:
            await ari.stop()

    return service, Wired(routes=callback_routes(deps.sessions), start=start, stop=stop)


async def _recover(service: Callable[[], CallbackService], asterisk: str | None) -> None:
    await service().recover(asterisk)
