"""Messaging as app.py wires it: the Open Line of each WhatsApp number, WhatsApp messages into
it, operators' messages out, statuses back, notices for the operator, and the admin's chat view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.clients.meta.inbox import InboxDispatcher
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.directory import Directory
from thoth_pbx.features.messaging.chats import Chats
from thoth_pbx.features.messaging.connector import LINE_EVENTS
from thoth_pbx.features.messaging.http import messaging_routes
from thoth_pbx.features.messaging.inbound import KIND_INBOUND, Inbound
from thoth_pbx.features.messaging.lines import KIND_LINE, MessagingLines
from thoth_pbx.features.messaging.media import MediaStore
from thoth_pbx.features.messaging.notices import KIND_NOTICE, Notices
from thoth_pbx.features.messaging.outbound import DELETE_NOTICE, EDIT_NOTICE, KIND_OUTBOUND, Outbound
from thoth_pbx.features.messaging.settings import MessagingSettings
from thoth_pbx.features.messaging.statuses import KIND_STATUS, Statuses
from thoth_pbx.features.portal import BitrixEvent, BitrixService, guarded

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600.0


def wire(
    deps: Deps, directory: Directory, bitrix: BitrixService, inbox: InboxDispatcher, graph: GraphClient
) -> tuple[MessagingLines, Wired]:
    settings = MessagingSettings.from_json(deps.settings.messaging)
    public_url = deps.settings.public_url
    lines = MessagingLines(deps.sessions, deps.outbox, bitrix.portals, public_url=public_url)
    deps.outbox.register(KIND_LINE, guarded(lines.run))
    media = MediaStore(
        graph,
        deps.settings.media_dir,
        deps.box.derive("media links"),
        public_url,
        max_bytes=settings.media_max_bytes,
        ttl_s=settings.media_link_ttl_s,
    )
    inbound = Inbound(deps.sessions, deps.outbox, bitrix.portals, media)
    deps.outbox.register(KIND_INBOUND, guarded(inbound.run), on_done=inbound.on_done, history=False)
    inbox.subscribe("message", inbound.on_message)
    statuses = Statuses(deps.sessions, deps.outbox, bitrix.portals)
    deps.outbox.register(KIND_STATUS, guarded(statuses.run), on_done=statuses.on_done, history=False)
    inbox.subscribe("status", statuses.on_status)
    deps.outbox.register(KIND_NOTICE, guarded(Notices(bitrix.portals).run), history=False)
    outbound = Outbound(deps.sessions, deps.outbox, graph, settings)
    deps.outbox.register(KIND_OUTBOUND, outbound.run, on_done=outbound.on_done, history=False)
    bitrix.app.on_event_inline("ONIMCONNECTORMESSAGEADD", outbound.message_added)

    async def edited(session: AsyncSession, event: BitrixEvent) -> dict[str, Any]:
        return await outbound.message_changed(session, event, EDIT_NOTICE)

    async def deleted(session: AsyncSession, event: BitrixEvent) -> dict[str, Any]:
        return await outbound.message_changed(session, event, DELETE_NOTICE)

    bitrix.app.on_event_inline("ONIMCONNECTORMESSAGEUPDATE", edited)
    bitrix.app.on_event_inline("ONIMCONNECTORMESSAGEDELETE", deleted)
    directory.listeners.append(lines.directory_changed)
    bitrix.app.setup_hooks.append(lines.enqueue_for_portal)

    async def line_event(event: BitrixEvent) -> dict[str, Any]:
        return await lines.line_event(event.instance_id, event.data)

    for name in LINE_EVENTS:
        bitrix.app.on_event(name, line_event)

    sweeper: list[asyncio.Task[None]] = []

    async def sweep_forever() -> None:
        while True:
            try:
                removed = await asyncio.to_thread(media.sweep)
                if removed:
                    log.info("expired media files removed", extra={"files": removed})
            except OSError:
                log.exception("sweeping expired media files failed")
            await asyncio.sleep(SWEEP_EVERY_S)

    def start() -> None:
        sweeper.append(asyncio.get_running_loop().create_task(sweep_forever()))

    async def stop() -> None:
        for task in sweeper:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await outbound.close()
        await lines.stop()

    routes = messaging_routes(lines, Chats(deps.sessions), media)
    return lines, Wired(routes=routes, start=start, stop=stop)
