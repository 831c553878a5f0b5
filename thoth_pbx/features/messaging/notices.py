"""A system line in the operator's Open Lines chat, for what the operator must know and
WhatsApp will not show: a refused or failed send (Meta's code and a hint), an edit or a delete
the customer will not see.

`im.message.add` with `DIALOG_ID: chat<id>` and `SYSTEM: Y` posts a system message into the
chat (scope `im`; apidocs.bitrix24.com/api-reference/chats/messages/index.html). The connector
API has no "system message" of its own (imconnector.send.messages would show it as written by
the customer), so this is the safe choice; docs/messaging.md says so."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.clients.bitrix.errors import BitrixLogicError
from thoth_pbx.features.portal import Portals, job_instance
from thoth_pbx.outbox.jobs import Job
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_NOTICE = "bitrix.messaging.notice"


async def enqueue_notice(
    session: AsyncSession, outbox: Outbox, instance_id: int, chain: str | None, im_chat_id: str | None, text: str
) -> int | None:
    """Queue the notice in the caller's transaction, after what the chat's chain already holds."""
    if not im_chat_id:
        return None
    return await outbox.enqueue(session, KIND_NOTICE, instance_id, chain, {"chat_id": im_chat_id, "text": text})


class Notices:
    def __init__(self, portals: Portals) -> None:
        self._portals = portals

    async def run(self, job: Job) -> dict[str, Any]:
        """A refused notice is logged, not failed: a failed job would hold the whole chat."""
        client = await self._portals.client(job_instance(job))
        try:
            message_id = await client.call(
                "im.message.add",
                {"DIALOG_ID": f"chat{job.payload['chat_id']}", "MESSAGE": job.payload["text"], "SYSTEM": "Y"},
            )
        except BitrixLogicError as exc:
            log.warning("the portal refused a notice for the operator", extra={"chat": job.payload["chat_id"]})
            return {"not_posted": str(exc)[:500]}
        return {"message_id": message_id}
