"""Messaging as app.py wires it: the Open Line of each WhatsApp number, WhatsApp messages into
it, operators' messages out, statuses back, notices for the operator, and the admin's chat view."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.clients.meta.inbox import InboxDispatcher
from thoth_pbx.core.tasks import BackgroundTasks
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.directory import Directory
from thoth_pbx.features.messaging.chats import Chats
from thoth_pbx.features.messaging.connector import LINE_EVENTS
from thoth_pbx.features.messaging.crm_link import KIND_CRM_LINK, CrmLinks
from thoth_pbx.features.messaging.http import messaging_routes
from thoth_pbx.features.messaging.inbound import KIND_INBOUND, Inbound, chat_chain
from thoth_pbx.features.messaging.lines import KIND_LINE, MessagingLines
from thoth_pbx.features.messaging.media import MediaStore
from thoth_pbx.features.messaging.notices import KIND_NOTICE, Notices
from thoth_pbx.features.messaging.outbound import DELETE_NOTICE, EDIT_NOTICE, KIND_OUTBOUND, Outbound
from thoth_pbx.features.messaging.settings import MessagingSettings
from thoth_pbx.features.messaging.sms import KIND_SENDERS, KIND_SMS_STATUS, SmsProvider
from thoth_pbx.features.messaging.statuses import KIND_STATUS, Statuses
from thoth_pbx.features.messaging.templates import REFRESH_EVERY_S, RETRY_FAILED_EVERY_S, Templates
from thoth_pbx.features.messaging.window import Windows
from thoth_pbx.features.portal import BitrixEvent, BitrixService, guarded
from thoth_pbx.store.changes import TableChanges
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600.0
WINDOW_SCAN_EVERY_S = 60.0


@dataclass(frozen=True)
class Messaging:
    """The messaging parts other code (app.py, tests) may reach: the lines, the templates, the
    24-hour windows (scan with a given clock) and the SMS provider."""

    lines: MessagingLines
    templates: Templates
    windows: Windows
    sms: SmsProvider

    async def scan_windows(self, now: dt.datetime) -> int:
        """Post the window notices due at `now` (the service calls it every minute)."""
        return await self.windows.scan(now, chat_chain)


def wire(
    deps: Deps, directory: Directory, bitrix: BitrixService, inbox: InboxDispatcher, graph: GraphClient
) -> tuple[Messaging, Wired]:
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
    deps.outbox.register(KIND_CRM_LINK, guarded(CrmLinks(deps.sessions, bitrix.portals).run), history=False)
    templates = Templates(deps.sessions, graph)
    inbox.subscribe("message_template_status_update", templates.on_status_webhook)
    directory.listeners.append(templates.directory_changed)
    sms = SmsProvider(
        deps.sessions, deps.outbox, bitrix.portals, templates, public_url=public_url, outbound_kind=KIND_OUTBOUND
    )
    deps.outbox.register(KIND_SENDERS, guarded(sms.reconcile), history=False)
    deps.outbox.register(KIND_SMS_STATUS, guarded(sms.run_status), history=False)
    bitrix.app.setup_hooks.append(sms.enqueue_for_portal)
    windows = Windows(deps.sessions, deps.outbox, notice_before=dt.timedelta(minutes=settings.window_notice_before_min))
    statuses = Statuses(deps.sessions, deps.outbox, bitrix.portals, sms)
    deps.outbox.register(KIND_STATUS, guarded(statuses.run), on_done=statuses.on_done, history=False)
    inbox.subscribe_batch("status", statuses.on_statuses)
    deps.outbox.register(KIND_NOTICE, guarded(Notices(bitrix.portals).run), history=False)
    outbound = Outbound(
        deps.sessions,
        deps.outbox,
        graph,
        settings,
        templates,
        sms,
        lines_changed=TableChanges(deps.engine, ("messaging_line",)),
        numbers_changed=TableChanges(deps.engine, ("phone", "waba_account")),
        customers_changed=TableChanges(deps.engine, ("customer",)),
    )
    deps.outbox.register(KIND_OUTBOUND, outbound.run, on_done=outbound.on_done, history=False)
    bitrix.app.on_event_inline("ONIMCONNECTORMESSAGEADD", outbound.message_added)

    async def edited(session: AsyncSession, event: BitrixEvent) -> dict[str, Any]:
        return await outbound.message_changed(session, event, EDIT_NOTICE)

    async def deleted(session: AsyncSession, event: BitrixEvent) -> dict[str, Any]:
        return await outbound.message_changed(session, event, DELETE_NOTICE)

    bitrix.app.on_event_inline("ONIMCONNECTORMESSAGEUPDATE", edited)
    bitrix.app.on_event_inline("ONIMCONNECTORMESSAGEDELETE", deleted)
    directory.listeners.append(lines.directory_changed)
    background = BackgroundTasks()

    def phones_changed(collection: str, _obj_id: int) -> None:
        if collection == "phones":
            background.spawn(sms.phones_changed())

    directory.listeners.append(phones_changed)
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

    messaging = Messaging(lines, templates, windows, sms)

    async def scan_windows_forever() -> None:
        while True:
            try:
                await messaging.scan_windows(utcnow())
            except Exception:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # stopped mid-transaction: the driver turned the cancel into its own error
                    raise asyncio.CancelledError from None
                log.exception("checking the chats' 24-hour windows failed; trying again")
            await asyncio.sleep(WINDOW_SCAN_EVERY_S)  # a schedule, not a synchronisation

    async def refresh_templates_forever() -> None:
        """All accounts at start and every REFRESH_EVERY_S; failed listings again sooner."""
        since_full = REFRESH_EVERY_S
        while True:
            full = since_full >= REFRESH_EVERY_S
            await templates.refresh_all(failed_only=not full)
            since_full = 0.0 if full else since_full + RETRY_FAILED_EVERY_S
            await asyncio.sleep(RETRY_FAILED_EVERY_S)  # a schedule, not a synchronisation

    def start() -> None:
        loop = asyncio.get_running_loop()
        for forever in (sweep_forever(), scan_windows_forever(), refresh_templates_forever()):
            sweeper.append(loop.create_task(forever))

    async def stop() -> None:
        for task in sweeper:
            task.cancel()
        # a loop cancelled inside a transaction may end with the driver's error instead of
        # CancelledError (the session's close then finds the connection half-way): it is stopped
        for outcome in await asyncio.gather(*sweeper, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.debug("a messaging loop ended with an error while stopping", exc_info=outcome)
        await outbound.close()
        await background.wait()
        await templates.stop()
        await lines.stop()

    routes = messaging_routes(messaging, Chats(deps.sessions), media)
    return messaging, Wired(routes=routes, start=start, stop=stop)
