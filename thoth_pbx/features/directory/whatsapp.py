"""The Meta side as one object for the composition root: Graph client, webhook, inbox, tokens.

Built from settings and the store in `app.py`; started/stopped with the web application.
Other services reach webhook events through `meta.dispatcher.subscribe(kind_prefix, handler)`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.clients.meta.inbox import InboxDispatcher, InboxWriter
from thoth_pbx.clients.meta.webhook import WebhookReceiver
from thoth_pbx.core.secrets import SecretBox, mask
from thoth_pbx.core.tasks import cancel_task
from thoth_pbx.features.directory.accounts import AccountCache, phones_by_pnid
from thoth_pbx.features.directory.tokens import TokenChecker, token_warning
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/waba/"
TOKEN_CHECK_INTERVAL_S = 6 * 3600
TOKEN_FIRST_CHECK_S = 60


def callback_url(public_url: str, api_key: str) -> str:
    return f"{public_url.rstrip('/')}{WEBHOOK_PATH}?api-key={api_key}"


class MetaService:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        graph_url: str,
        api_version: str,
        public_url: str,
        graph: GraphClient | None = None,
        check_tokens: bool = True,
        inbox_sweep_seconds: float = 5.0,
    ) -> None:
        self.public_url = public_url
        self.graph = graph or GraphClient(graph_url, api_version)
        self.accounts = AccountCache(sessions, box)
        self.dispatcher = InboxDispatcher(sessions, phones_by_pnid, sweep_seconds=inbox_sweep_seconds)
        self.writer = InboxWriter(engine, on_commit=self.dispatcher.notify)
        self.webhook = WebhookReceiver(self.accounts, self.writer)
        self.tokens = TokenChecker(sessions, self.graph)
        self._check_tokens = check_tokens
        self._token_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.dispatcher.start()
        if self._check_tokens and self._token_task is None:
            self._token_task = asyncio.get_running_loop().create_task(self._token_loop(), name="meta-token-check")

    async def stop(self) -> None:
        await cancel_task(self._token_task)
        self._token_task = None
        await self.dispatcher.stop()
        await self.writer.stop()
        await self.graph.close()

    async def _token_loop(self) -> None:
        # A schedule, not a synchronisation: first check a minute after start (a short-lived
        # process such as a test never calls Meta unasked), then every few hours.
        await asyncio.sleep(TOKEN_FIRST_CHECK_S)
        while True:
            await self.tokens.check_all()
            await asyncio.sleep(TOKEN_CHECK_INTERVAL_S)

    # -------------------------------------------------------------- admin output

    def present_waba(self, account: Any, out: dict[str, Any], reveal: bool) -> None:
        """Callback URL next to the verify token (masked like the api-key in lists), token health."""
        key = account.api_key if reveal else (mask(account.api_key) or "")
        out["callback_url"] = callback_url(self.public_url, key)
        out["token_checked_at"] = account.token_checked_at.isoformat() if account.token_checked_at else None
        out["token_info"] = account.token_info
        out["token_warning"] = token_warning(account.token_expires_at, utcnow(), account.token_info)

    @staticmethod
    def present_phone(phone: Any, out: dict[str, Any], reveal: bool) -> None:
        out["sip_user_password"] = mask(phone.sip_user_password)

    def presenters(self) -> dict[str, Any]:
        return {"wabas": self.present_waba, "phones": self.present_phone}
