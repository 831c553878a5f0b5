"""Messaging as app.py wires it: the Open Line of each WhatsApp number, WhatsApp messages into it."""

from __future__ import annotations

from typing import Any

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.clients.meta.inbox import InboxDispatcher
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.directory import Directory
from thoth_pbx.features.messaging.connector import LINE_EVENTS
from thoth_pbx.features.messaging.http import messaging_routes
from thoth_pbx.features.messaging.inbound import KIND_INBOUND, Inbound
from thoth_pbx.features.messaging.lines import KIND_LINE, MessagingLines
from thoth_pbx.features.messaging.outbound import KIND_OUTBOUND, Outbound, event_chain, meta_guarded
from thoth_pbx.features.portal import BitrixEvent, BitrixService, guarded


def wire(
    deps: Deps, directory: Directory, bitrix: BitrixService, inbox: InboxDispatcher, graph: GraphClient
) -> tuple[MessagingLines, Wired]:
    lines = MessagingLines(deps.sessions, deps.outbox, bitrix.portals, public_url=deps.settings.public_url)
    deps.outbox.register(KIND_LINE, guarded(lines.run))
    inbound = Inbound(deps.sessions, deps.outbox, bitrix.portals)
    deps.outbox.register(KIND_INBOUND, guarded(inbound.run))
    inbox.subscribe("message", inbound.on_message)
    outbound = Outbound(deps.sessions, deps.outbox, graph)
    deps.outbox.register(KIND_OUTBOUND, meta_guarded(outbound.run))
    bitrix.app.on_event("ONIMCONNECTORMESSAGEADD", outbound.on_message_add, chain=event_chain)
    directory.listeners.append(lines.directory_changed)
    bitrix.app.setup_hooks.append(lines.enqueue_for_portal)

    async def line_event(event: BitrixEvent) -> dict[str, Any]:
        return await lines.line_event(event.instance_id, event.data)

    for name in LINE_EVENTS:
        bitrix.app.on_event(name, line_event)
    return lines, Wired(routes=messaging_routes(lines), stop=lines.stop)
