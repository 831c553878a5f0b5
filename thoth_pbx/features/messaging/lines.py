"""One Open Line per WhatsApp number: set up (and repaired) as durable jobs on the portal's chain.

When a phone is linked to an active portal, after an install or an admin sync, and when
Bitrix24 says the line or the connector status was deleted, a `bitrix.messaging.line` job runs:
imconnector.register (once per portal, idempotent), the line `THOTH_<number>` found or added
(imopenlines.config.list.get / config.add), imconnector.activate, connector.data.set, then
imconnector.status read back into `messaging_line` (green / yellow / red with the reason).
Unlinking or deleting the phone deactivates its line (ACTIVE=0); nothing else of the portal is
touched."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.errors import BitrixLogicError
from thoth_pbx.core.shapes import as_int
from thoth_pbx.core.tasks import BackgroundTasks
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import AppInstance, Phone
from thoth_pbx.features.messaging import connector
from thoth_pbx.features.messaging.models import MessagingLine, line_of
from thoth_pbx.features.portal import Portals, portal_chain
from thoth_pbx.outbox.jobs import Fail, Job
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

KIND_LINE = "bitrix.messaging.line"


class MessagingLines:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, portals: Portals, *, public_url: str
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._portals = portals
        self.public_url = public_url
        self._background = BackgroundTasks()

    # ------------------------------------------------------------------ triggers

    async def enqueue_for_portal(self, session: AsyncSession, instance_id: int, *, reason: str) -> list[int]:
        """Portal set-up hook (install, admin sync): one line job per phone linked to the portal."""
        phones = (
            await session.scalars(select(Phone).where(Phone.app_instance_id == instance_id).order_by(Phone.id))
        ).all()
        return [await self._enqueue(session, instance_id, phone.id, reason) for phone in phones]

    def directory_changed(self, collection: str, obj_id: int) -> None:
        """Directory listener: a phone linked, moved, unlinked or deleted."""
        if collection != "phones":
            return
        self._background.spawn(self._phone_changed(obj_id))

    async def _phone_changed(self, phone_id: int) -> None:
        try:
            async with self._sessions() as session, session.begin():
                phone = await session.get(Phone, phone_id)
                row = await line_of(session, phone_id)
                instance = (
                    await session.get(AppInstance, phone.app_instance_id) if phone and phone.app_instance_id else None
                )
                if row is not None and row.app_instance_id and (instance is None or row.app_instance_id != instance.id):
                    # unlinked, moved or deleted: the old portal's line goes inactive
                    await self._enqueue(session, row.app_instance_id, phone_id, "phone unlinked", deactivate=True)
                if instance is not None and instance.status == "active" and phone is not None:
                    await self._enqueue(session, instance.id, phone_id, "phone linked")
        except Exception:
            log.exception("messaging: queueing the line set-up after a phone change failed", extra={"phone": phone_id})

    async def repair(self, phone_id: int) -> int:
        """Admin "repair": set the line up again now."""
        async with self._sessions() as session, session.begin():
            phone = await session.get(Phone, phone_id)
            if phone is None:
                raise FieldError("id", f"no phone with id {phone_id}", 404)
            if phone.app_instance_id is None:
                raise FieldError("app_instance_id", "the phone is not linked to a Bitrix24 portal", 409)
            return await self._enqueue(session, phone.app_instance_id, phone_id, "admin repair")

    async def line_event(self, instance_id: int, data: Any) -> dict[str, Any]:
        """ONIMCONNECTORLINEDELETE / ONIMCONNECTORSTATUSDELETE: set the affected line up again
        (a line the admin deleted gets a new one: the number keeps its Open Lines chat)."""
        # ONIMCONNECTORLINEDELETE: data is the line ID itself; ONIMCONNECTORSTATUSDELETE:
        # data[connector], data[line] in lower case (bitrix24-rest.md §2, Events)
        if isinstance(data, dict):
            line_id = as_int(data.get("line", data.get("LINE")))
        else:
            line_id = as_int(data)
        async with self._sessions() as session, session.begin():
            query = select(MessagingLine).where(MessagingLine.app_instance_id == instance_id)
            rows = (await session.scalars(query)).all()
            hit = [r for r in rows if line_id is None or r.line_id == line_id]
            for row in hit:
                if line_id is not None and row.line_id == line_id:
                    row.state, row.reason = (
                        "pending",
                        f"line {line_id} deleted or deactivated in Bitrix24; set up again",
                    )
                await self._enqueue(session, instance_id, row.phone_id, "line event")
        return {"repairing": [r.phone_id for r in hit]}

    async def _enqueue(
        self, session: AsyncSession, instance_id: int, phone_id: int, reason: str, *, deactivate: bool = False
    ) -> int:
        payload = {"phone_id": phone_id, "reason": reason, "deactivate": deactivate}
        return await self._outbox.enqueue(session, KIND_LINE, instance_id, portal_chain(instance_id), payload)

    # ------------------------------------------------------------------ the job

    async def run(self, job: Job) -> dict[str, Any]:
        assert job.instance_id is not None
        phone_id = int(job.payload["phone_id"])
        client = await self._portals.client(job.instance_id)
        async with self._sessions() as session:
            row = await line_of(session, phone_id)
            phone = await session.get(Phone, phone_id)
        if job.payload.get("deactivate"):
            if row is not None and row.line_id:
                await client.call(
                    "imconnector.activate", {"CONNECTOR": connector.CONNECTOR_ID, "LINE": row.line_id, "ACTIVE": 0}
                )
            await self._store(phone_id, None, job.instance_id, row.line_id if row else None, "unlinked", None)
            return {"deactivated": row.line_id if row else None}
        if phone is None or phone.app_instance_id != job.instance_id:
            return {"skipped": "the phone is no longer linked to this portal"}
        error = connector.register_error(
            await client.call("imconnector.register", connector.register_params(self.public_url))
        )
        if error:
            await self._store(phone_id, phone.number, job.instance_id, row.line_id if row else None, "red", error)
            raise Fail(f"imconnector.register refused: {error}")
        line_id = await self._line_for(client, connector.line_name(phone.number))
        params = {"CONNECTOR": connector.CONNECTOR_ID, "LINE": line_id}
        await client.call("imconnector.activate", {**params, "ACTIVE": 1})
        await client.call(
            "imconnector.connector.data.set",
            {
                **params,
                "DATA": {
                    "ID": f"{connector.CONNECTOR_ID}_{line_id}",
                    "URL": self.public_url,
                    "URL_IM": f"https://wa.me/{phone.number.lstrip('+')}",
                    "NAME": f"WhatsApp {phone.number}",
                },
            },
        )
        state, reason = connector.state_of(await client.call("imconnector.status", params))
        await self._store(phone_id, phone.number, job.instance_id, line_id, state, reason)
        return {"line": line_id, "state": state, "reason": reason}

    async def _line_for(self, client: Any, name: str) -> int:
        """The admin's line of that name if there is one, else a new one."""
        lines = await client.call("imopenlines.config.list.get", {"PARAMS": {"select": ["ID", "LINE_NAME"]}}) or []
        for line in lines if isinstance(lines, list) else []:
            if isinstance(line, dict) and line.get("LINE_NAME") == name and as_int(line.get("ID")):
                return int(line["ID"])
        created = as_int(await client.call("imopenlines.config.add", {"PARAMS": {"LINE_NAME": name, "ACTIVE": "Y"}}))
        if created is None:
            raise BitrixLogicError("ERROR_CORE", "imopenlines.config.add answered no line ID")
        return created

    async def _store(
        self,
        phone_id: int,
        number: str | None,
        instance_id: int | None,
        line_id: int | None,
        state: str,
        reason: str | None,
    ) -> None:
        async with self._sessions() as session, session.begin():
            row = await line_of(session, phone_id)
            if row is None:
                row = MessagingLine(phone_id=phone_id, number=number or "")
                session.add(row)
            if number:
                row.number = number
            row.app_instance_id, row.line_id, row.state, row.reason = instance_id, line_id, state, reason
            row.checked_at = utcnow()

    # ------------------------------------------------------------------ admin view

    async def view(self, phone_id: int) -> dict[str, Any]:
        async with self._sessions() as session:
            phone = await session.get(Phone, phone_id)
            if phone is None:
                raise FieldError("id", f"no phone with id {phone_id}", 404)
            row = await line_of(session, phone_id)
        linked = phone.app_instance_id is not None
        return {
            "phone_id": phone_id,
            "line_name": connector.line_name(phone.number),
            "connector": row.state if row else ("pending" if linked else "unlinked"),
            "reason": (row.reason if row else None) or (None if linked else "the phone is not linked to a portal"),
            "line_id": row.line_id if row else None,
            "app_instance_id": phone.app_instance_id,
            "checked_at": row.checked_at.isoformat() if row and row.checked_at else None,
            "note": "imconnector works only in an installed app's context: install the local app on the portal "
            "(a webhook cannot register the connector)",
        }

    async def stop(self) -> None:
        await self._background.wait()
