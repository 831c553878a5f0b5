"""The messaging bridge under test: our service between the Bitrix24 simulator and the Meta
simulator, a linked number with a green line, Meta's status webhooks pointed at our webhook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from tests.support.bitrix import ServiceEnv, all_done, service_env, wait_until
from thoth_pbx.clients.meta.tables import WebhookInbox
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.meta import MetaSimulator

SEED = meta_sim.Seed()
CUSTOMER = "15551234567"


@dataclass
class Bridge:
    env: ServiceEnv
    meta: MetaSimulator
    webhook: str  # our webhook path with its api-key
    phone_id: int
    line_id: int

    @property
    def phone(self) -> Any:
        return self.meta.phones[SEED.phone_number_id]

    async def post(self, doc: dict[str, Any]) -> None:
        """Deliver a webhook as Meta would, signed with the app secret (Meta then knows the
        messages it announced, so they can be marked read)."""
        self.meta.announce(doc)
        body = json.dumps(doc).encode()
        resp = await self.env.http.post(
            self.webhook,
            data=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": meta_sim.sign(body, SEED.app_secret)},
        )
        assert resp.status == 200, await resp.text()

    async def customer_writes(self, text: str, *, wamid: str, context: str | None = None) -> None:
        change = meta_sim.message_change(SEED.phone_number_id, SEED.display_phone_number, CUSTOMER, text, wamid=wamid)
        if context:
            change["value"]["messages"][0]["context"] = {"from": CUSTOMER, "id": context}
        await self.post(meta_sim.delivery(SEED.waba_id, [change]))

    def in_bitrix(self) -> list[dict[str, Any]]:
        """Every entry imconnector.send.messages accepted, in order."""
        calls = self.env.sim.recorder.calls("imconnector.send.messages", ok=True)
        return [m for call in calls for m in call.params["MESSAGES"]]

    async def admin_get(self, path: str) -> Any:
        resp = await self.env.http.get(path, headers=self.env.admin)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def quiet(self) -> None:
        """Meta's queued status webhooks answered, every stored webhook event handled, every job done."""
        await self.meta.drain_webhooks()

        async def inbox_handled() -> bool:
            async with self.env.sessions() as session:
                pending = await session.scalar(
                    select(func.count()).select_from(WebhookInbox).where(WebhookInbox.processed_at.is_(None))
                )
            return pending == 0

        await wait_until(inbox_handled, what="every webhook event handled")
        await wait_until(lambda: all_done(self.env.sessions), what="a quiet outbox")


Admin = Callable[[str, str, "dict[str, Any] | None"], Awaitable[Any]]


async def link_seed_number(
    admin: Admin, instance_id: int, *, settled: Callable[[], Awaitable[bool]] | None = None, timeout: float = 15.0
) -> tuple[str, int, int]:
    """Through the admin API: the seeded account, its number linked to the portal, the line
    green (and `settled`, when given); returns the webhook path, the phone id and the line id."""
    account = {"name": "Main", "waba_id": SEED.waba_id, "access_token": SEED.token, "app_secret": SEED.app_secret}
    waba = await admin("POST", "/api/admin/wabas", account)
    phone = {
        "number": SEED.display_phone_number,
        "phone_number_id": SEED.phone_number_id,
        "waba_account_id": waba["id"],
        "app_instance_id": instance_id,
    }
    created = await admin("POST", "/api/admin/phones", phone)

    async def green() -> Any:
        view = await admin("GET", f"/api/admin/phones/{created['id']}/connector", None)
        return view if view["connector"] == "green" and (settled is None or await settled()) else None

    view = await wait_until(green, timeout=timeout, what="the green line")
    return f"/api/waba/?api-key={waba['api_key']}", int(created["id"]), int(view["line_id"])


async def link_number(env: ServiceEnv) -> tuple[str, int, int]:
    """Install the app, add the seeded account and number linked to the portal, wait for green."""
    instance_id = await env.install()

    async def admin(method: str, path: str, body: dict[str, Any] | None) -> Any:
        return await (await env.http.request(method, path, json=body, headers=env.admin)).json()

    return await link_seed_number(admin, instance_id, settled=lambda: all_done(env.sessions))


@asynccontextmanager
async def bridge(
    tmp_path: Any, database_url: str, aiohttp_server: Any, aiohttp_client: Any, **env: str
) -> AsyncIterator[Bridge]:
    meta = meta_sim.seeded(SEED)
    meta_server = await aiohttp_server(meta.app())
    async with service_env(
        tmp_path,
        database_url,
        aiohttp_server,
        aiohttp_client,
        THOTH_META_GRAPH_URL=str(meta_server.make_url("")).rstrip("/"),
        **env,
    ) as service:
        webhook, phone_id, line_id = await link_number(service)
        meta.apps[SEED.app_id].callback_url = service.public_url + webhook
        try:
            yield Bridge(service, meta, webhook, phone_id, line_id)
        finally:
            # no status webhook may reach the service while it stops
            meta.apps[SEED.app_id].callback_url = None
            await meta.drain_webhooks()
