"""The Bitrix24 side as app.py wires it: portals, the app (install/events), job kinds, user sync."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.rest import OAuthApp
from thoth_pbx.clients.bitrix.transport import PortalHttp
from thoth_pbx.core.settings import Settings
from thoth_pbx.core.tasks import BackgroundTasks
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import AppInstance, Phone
from thoth_pbx.features.portal.install import KIND_USERS, BitrixApp
from thoth_pbx.features.portal.jobs import register_portal_jobs
from thoth_pbx.features.portal.portals import Portals
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.snapshots import ChangeCounter

log = logging.getLogger(__name__)

USERS_REFRESH_S = 15 * 60


def oauth_app(settings: Settings) -> OAuthApp | None:
    if not (settings.bitrix_client_id and settings.bitrix_client_secret):
        return None
    return OAuthApp(settings.bitrix_client_id, settings.bitrix_client_secret, settings.bitrix_oauth_url)


class BitrixService:
    """Owns the per-portal clients and the periodic user-map refresh."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        settings: Settings,
        *,
        http: PortalHttp | None = None,
        client_options: dict[str, Any] | None = None,
        users_refresh_s: float = USERS_REFRESH_S,
        changes: ChangeCounter | None = None,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self.portals = Portals(sessions, oauth_app(settings), http=http, client_options=client_options)
        self.app = BitrixApp(sessions, outbox, self.portals, public_url=settings.public_url, changes=changes)
        self.users_refresh_s = users_refresh_s
        self._task: asyncio.Task[None] | None = None
        self._background = BackgroundTasks()
        register_portal_jobs(outbox, self.app)

    def directory_changed(self, collection: str, obj_id: int) -> None:
        """Directory listener: new limits/tokens typed by an admin, or a phone linked to a portal."""
        if collection == "instances":
            self.portals.forget(obj_id)
        elif collection == "phones":
            self._background.spawn(self._phone_changed(obj_id))

    async def _phone_changed(self, phone_id: int) -> None:
        """A phone (re)linked to an active portal gets its external line through a set-up job."""
        try:
            async with self._sessions() as session, session.begin():
                phone = await session.get(Phone, phone_id)
                if phone is None or phone.app_instance_id is None:
                    return
                instance = await session.get(AppInstance, phone.app_instance_id)
                if instance is None or instance.status != "active":
                    return
                await self.app.enqueue_setup(session, instance.id, reason=f"phone {phone_id} changed")
        except Exception:
            log.exception("bitrix: queueing the set-up after a phone change failed", extra={"phone": phone_id})

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh_users_periodically(), name="bitrix-user-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._background.wait()
        await self.portals.aclose()

    async def resync(self, instance_id: int) -> list[int]:
        """Admin "sync now": bind events, add lines, reload users (queued, in order)."""
        async with self._sessions() as session, session.begin():
            row = await session.get(AppInstance, instance_id)
            if row is None:
                raise FieldError("id", f"no app instance with id {instance_id}", 404)
            if row.status != "active":
                raise FieldError("status", f"instance {instance_id} is {row.status}; reinstall the app first", 409)
            return await self.app.enqueue_setup(session, instance_id, reason="admin")

    async def _refresh_users_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.users_refresh_s)
            try:
                await self.queue_user_refresh()
            except Exception:
                log.exception("bitrix: scheduling the user map refresh failed")

    async def queue_user_refresh(self) -> int:
        """One users job per active portal that has none waiting already (no pile-up in outages)."""
        queued = 0
        async with self._sessions() as session, session.begin():
            active = (await session.scalars(select(AppInstance.id).where(AppInstance.status == "active"))).all()
            waiting = set(
                (
                    await session.scalars(
                        select(OutboxJob.app_instance_id).where(
                            OutboxJob.kind == KIND_USERS, OutboxJob.status.in_(("pending", "running"))
                        )
                    )
                ).all()
            )
            for instance_id in active:
                if instance_id not in waiting:
                    await self._outbox.enqueue(session, KIND_USERS, instance_id, None, {"reason": "periodic"})
                    queued += 1
        return queued
