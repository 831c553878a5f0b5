"""Message templates of each WhatsApp Business account, synchronised from the Graph API so a
template command is checked before anything is sent.

`GET /{waba_id}/message_templates` (fields name, language, status, category, components; paged
with `paging.cursors.after`; developers.facebook.com/docs/graph-api/reference/whats-app-business-
account/message_templates) is listed whole when the account is added or changed, when Meta's
`message_template_status_update` webhook says a template changed (its status is applied at
once, then the whole list refreshed), every REFRESH_EVERY_S, and on the admin's demand. The
listing replaces the stored set in one transaction, so a command never sees half a listing.

A listing is a copy of Meta's state, not a fact of ours: it runs as a background task, not an
outbox job, and a failed one is simply made again by the next trigger (the error is kept for
the admin's view)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.graph import GraphClient, GraphError
from thoth_pbx.clients.meta.inbox import InboxItem
from thoth_pbx.core.shapes import sub
from thoth_pbx.core.tasks import BackgroundTasks
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import WabaAccount
from thoth_pbx.features.messaging.models import MessagingTemplate, MessagingTemplateSync
from thoth_pbx.features.messaging.template_command import SYNTAX, Command, Refusal, Template, check
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

REFRESH_EVERY_S = 6 * 3600.0
RETRY_FAILED_EVERY_S = 600.0
FIELDS = "id,name,language,status,category,components"
PAGE = 100
MAX_PAGES = 100  # 10,000 templates: far above Meta's per-account limit


def as_template(row: MessagingTemplate) -> Template:
    components = (row.definition or {}).get("components")
    return Template(row.name, row.language, row.status, components if isinstance(components, list) else [])


async def known(session: AsyncSession, account_id: int) -> list[Template]:
    rows = (await session.scalars(select(MessagingTemplate).where(MessagingTemplate.account_id == account_id))).all()
    return [as_template(r) for r in rows]


async def ever_synced(session: AsyncSession, account_id: int) -> bool:
    row = await session.get(MessagingTemplateSync, account_id)
    return row is not None and row.synced_at is not None


CACHE_TTL_S = 60.0  # another process (a second instance, an admin's sync there) is seen this late at most


class Templates:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], graph: GraphClient) -> None:
        self._sessions = sessions
        self._graph = graph
        self._background = BackgroundTasks()
        self._cache: dict[int, tuple[float, list[Template]]] = {}

    async def of_account(self, session: AsyncSession, account_id: int) -> list[Template] | None:
        """The account's templates as a command is checked against them (cached; dropped when
        a listing or a status webhook changes them here), None when never listed."""
        hit = self._cache.get(account_id)
        if hit is not None and time.monotonic() - hit[0] < CACHE_TTL_S:
            return hit[1]
        if not await ever_synced(session, account_id):
            return None
        listed = await known(session, account_id)
        self._cache[account_id] = (time.monotonic(), listed)
        return listed

    async def part_for(
        self, session: AsyncSession, account_id: int, command: Command | None, typed: str
    ) -> tuple[dict[str, Any], str | None]:
        """A read template command as the send job's part, or (the text as typed, why it does
        not go): for an operator's chat message and a CRM SMS alike."""
        as_typed: dict[str, Any] = {"type": "template", "text": typed}
        if command is None:
            return as_typed, f"the command cannot be read; the form is {SYNTAX}"
        known = await self.of_account(session, account_id)
        if known is None:
            self.refresh_soon(account_id)
            return as_typed, "the templates of this WhatsApp account are being synchronised; send it again in a minute"
        try:
            checked = check(command, known)
        except Refusal as exc:
            return as_typed, str(exc)
        return {"type": "template", "template": checked.template, "rendered": checked.rendered}, None

    def refresh_soon(self, account_id: int) -> None:
        """A listing in the background (a template command found none, an account changed)."""
        self._background.spawn(self._quietly(account_id))

    async def _quietly(self, account_id: int) -> None:
        try:
            await self.sync(account_id)
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from None  # stopped mid-transaction: stop, do not log
            log.exception("synchronising the message templates failed", extra={"account": account_id})

    def directory_changed(self, collection: str, obj_id: int) -> None:
        """Directory listener: an account added or changed (a new token may see other templates)."""
        if collection == "wabas":
            self.refresh_soon(obj_id)

    async def stop(self) -> None:
        await self._background.wait()

    async def on_status_webhook(self, item: InboxItem) -> None:
        """`message_template_status_update`: the new status applies at once (a PAUSED template
        must stop being offered now), then the whole list is refreshed."""
        if item.kind != "message_template_status_update" or item.waba_account_id is None:
            return
        value = sub(item.payload, "value")
        name = str(value.get("message_template_name") or "")
        language = str(value.get("message_template_language") or "")
        event = str(value.get("event") or "").upper()
        if name and language and event:
            async with self._sessions() as session, session.begin():
                row = await session.scalar(
                    select(MessagingTemplate).where(
                        MessagingTemplate.account_id == item.waba_account_id,
                        MessagingTemplate.name == name,
                        MessagingTemplate.language == language,
                    )
                )
                if row is not None:
                    row.status = event
            self._cache.pop(item.waba_account_id, None)
        self.refresh_soon(item.waba_account_id)

    async def refresh_all(self, *, failed_only: bool = False) -> int:
        """Every account's listing (or only those whose last listing failed); how many were listed."""
        async with self._sessions() as session:
            ids = list((await session.scalars(select(WabaAccount.id).order_by(WabaAccount.id))).all())
            if failed_only:
                failed = set(
                    (
                        await session.scalars(
                            select(MessagingTemplateSync.account_id).where(MessagingTemplateSync.error.is_not(None))
                        )
                    ).all()
                )
                ids = [i for i in ids if i in failed]
        for account_id in ids:
            await self._quietly(account_id)
        return len(ids)

    async def sync(self, account_id: int) -> dict[str, Any]:
        """List the account's templates at Meta and store them; Meta's refusal is kept for the
        admin (and returned), not raised."""
        async with self._sessions() as session:
            account = await session.get(WabaAccount, account_id)
            if account is None:
                raise FieldError("id", f"no WhatsApp Business account with id {account_id}", 404)
            if not account.waba_id:
                return {"account_id": account_id, "error": "the account has no waba_id"}
            waba_id, token = account.waba_id, account.access_token
        try:
            listed = await self._list(waba_id, token)
        except GraphError as exc:
            error = f"({exc.code}) {exc.details or exc.message}"[:1000]
            await self._failed(account_id, error)
            log.warning("listing the message templates failed", extra={"account": account_id, "code": exc.code})
            return {"account_id": account_id, "error": error}
        return {"account_id": account_id} | await self._store(account_id, listed)

    async def _list(self, waba_id: str, token: str) -> list[dict[str, Any]]:
        templates: list[dict[str, Any]] = []
        params: dict[str, Any] = {"fields": FIELDS, "limit": PAGE}
        for _ in range(MAX_PAGES):
            # one attempt: the next trigger is the retry (a stop never waits on Graph's back-off)
            page = await self._graph.request(
                "GET", f"{waba_id}/message_templates", token, params=params, idempotent=True, attempts=1
            )
            data = page.get("data")
            templates += [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []
            paging = sub(page, "paging")
            after = sub(paging, "cursors").get("after")
            if not paging.get("next") or not after:
                break
            params = {**params, "after": after}
        return templates

    async def _store(self, account_id: int, listed: list[dict[str, Any]]) -> dict[str, Any]:
        async with self._sessions() as session, session.begin():
            rows = {
                (r.name, r.language): r
                for r in (
                    await session.scalars(select(MessagingTemplate).where(MessagingTemplate.account_id == account_id))
                ).all()
            }
            seen = set()
            for item in listed:
                name, language = str(item.get("name") or ""), str(item.get("language") or "")
                if not name or not language or (name, language) in seen:
                    continue
                seen.add((name, language))
                components = item.get("components") if isinstance(item.get("components"), list) else []
                row = rows.get((name, language))
                if row is None:
                    row = MessagingTemplate(account_id=account_id, name=name[:512], language=language[:16])
                    session.add(row)
                row.template_id = str(item.get("id") or "")[:64] or None
                row.status = str(item.get("status") or "UNKNOWN")[:32].upper()
                row.category = str(item.get("category") or "")[:32] or None
                row.definition = {"components": components}
            gone = [r.id for key, r in rows.items() if key not in seen]
            if gone:
                await session.execute(delete(MessagingTemplate).where(MessagingTemplate.id.in_(gone)))
            sync = await session.get(MessagingTemplateSync, account_id)
            if sync is None:
                session.add(MessagingTemplateSync(account_id=account_id, synced_at=utcnow(), error=None))
            else:
                sync.synced_at, sync.error = utcnow(), None
        self._cache.pop(account_id, None)
        return {"templates": len(seen), "removed": len(gone)}

    async def _failed(self, account_id: int, error: str) -> None:
        async with self._sessions() as session, session.begin():
            sync = await session.get(MessagingTemplateSync, account_id)
            if sync is None:
                session.add(MessagingTemplateSync(account_id=account_id, synced_at=None, error=error))
            else:
                sync.error = error

    async def listing(self, account_id: int) -> dict[str, Any]:
        """The admin's view: the account's templates and how fresh they are."""
        async with self._sessions() as session:
            if await session.get(WabaAccount, account_id) is None:
                raise FieldError("id", f"no WhatsApp Business account with id {account_id}", 404)
            sync = await session.get(MessagingTemplateSync, account_id)
            rows = (
                await session.scalars(
                    select(MessagingTemplate)
                    .where(MessagingTemplate.account_id == account_id)
                    .order_by(MessagingTemplate.name, MessagingTemplate.language)
                )
            ).all()
        out = []
        for row in rows:
            template = as_template(row)
            out.append(
                {
                    "name": row.name,
                    "language": row.language,
                    "status": row.status,
                    "category": row.category,
                    "id": row.template_id,
                    "body_values": len(template.body_names),
                    "header": template.header_needs,
                    "button_values": sorted(template.button_needs()),
                    "command": _example(template),
                    "components": template.components,
                }
            )
        return {
            "account_id": account_id,
            "synced_at": sync.synced_at.isoformat() if sync and sync.synced_at else None,
            "error": sync.error if sync else None,
            "templates": out,
        }


def _example(template: Template) -> str:
    values = [f"value{i}" for i in range(1, len(template.body_names) + 1)]
    if template.header_needs:
        values.append("header=" + ("text" if template.header_needs == "text" else "https://..."))
    values += [f"button{i}=value" for i in sorted(template.button_needs())]
    return f"template-{template.name}+{template.language}" + ("+" + "|".join(values) if values else "")
