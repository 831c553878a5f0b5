"""Bitrix24 test helpers: the simulator on loopback, a seeded portal row, waiting with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.rest import Grant, PortalAuth
from thoth_pbx.clients.bitrix.telephony import INCOMING, FinishCall, RegisterCall
from thoth_pbx.features.calls.jobs import CallJobs
from thoth_pbx.features.directory.models import AppInstance
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal, SimUser

USERS = [
    SimUser(1, "Anna", "Admin", "100"),
    SimUser(2, "Boris", "Agent", "101"),
    SimUser(3, "Vera", "Agent", "102"),
    SimUser(4, "Gone", "Former", "103", active=False),
]


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `predicate` (sync or async) until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bitrix_env(sim: BitrixSimulator, public_url: str) -> dict[str, str]:
    """THOTH_* settings pointing the service at the simulator's OAuth server."""
    return {
        "THOTH_BITRIX_CLIENT_ID": sim.client_id,
        "THOTH_BITRIX_CLIENT_SECRET": sim.client_secret,
        "THOTH_BITRIX_OAUTH_URL": sim.oauth_url,
        "THOTH_PUBLIC_URL": public_url,
    }


async def seed_instance(sessions: async_sessionmaker[AsyncSession], sim: BitrixSimulator, portal: Portal) -> int:
    """An app instance as an install would leave it (tokens issued by the simulator)."""
    portal.installed = True
    portal.application_token = portal.application_token or "app-token-" + portal.member_id[:12]
    tokens = sim.issue_tokens(portal)
    async with sessions() as session, session.begin():
        row = AppInstance(
            member_id=portal.member_id,
            domain=portal.domain.split(":")[0],
            client_endpoint=portal.client_endpoint,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            application_token=portal.application_token,
            rate_per_s=portal.rate,
            rate_burst=portal.burst,
            settings={},
        )
        session.add(row)
        await session.flush()
        return row.id


async def jobs(sessions: async_sessionmaker[AsyncSession], **where: Any) -> list[OutboxJob]:
    async with sessions() as session:
        query = select(OutboxJob).order_by(OutboxJob.id)
        for key, value in where.items():
            query = query.where(getattr(OutboxJob, key) == value)
        return list((await session.scalars(query)).all())


async def all_done(sessions: async_sessionmaker[AsyncSession], expected: int | None = None) -> bool:
    rows = await jobs(sessions)
    return bool(rows) and all(r.status == "done" for r in rows) and (expected is None or len(rows) == expected)


@dataclass
class MemoryTokenStore:
    """A TokenStore for client tests that do not need a database; remembers every save."""

    auth: PortalAuth
    grants: list[Grant] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    reauth: str | None = None

    async def load(self) -> PortalAuth:
        return PortalAuth(
            self.auth.member_id, self.auth.client_endpoint, self.auth.access_token, self.auth.refresh_token
        )

    async def save_grant(self, grant: Grant) -> None:
        self.grants.append(grant)
        self.auth.access_token = grant.access_token
        self.auth.refresh_token = grant.refresh_token
        if grant.client_endpoint:
            self.auth.client_endpoint = grant.client_endpoint

    async def save_endpoint(self, client_endpoint: str) -> None:
        self.endpoints.append(client_endpoint)
        self.auth.client_endpoint = client_endpoint

    async def mark_needs_reauth(self, detail: str) -> None:
        self.reauth = detail


def call(i: int, user_id: int = 2) -> RegisterCall:
    """The i-th test call: an incoming WhatsApp call on line 14155550123 for Bitrix user `user_id`."""
    return RegisterCall(
        phone_number=f"+1415555{i:04d}",
        type=INCOMING,
        external_call_id=f"1710140185.{i}",
        user_id=user_id,
        line_number="14155550123",
    )


async def enqueue_call_logs(
    calls: CallJobs, sessions: async_sessionmaker[AsyncSession], instance_id: int, count: int, *, start: int = 0
) -> None:
    """`count` call logs (register + finish jobs), all in one transaction."""
    async with sessions() as session, session.begin():
        for i in range(start, start + count):
            await calls.register(session, instance_id, call(i))
            await calls.finish(
                session,
                instance_id,
                call(i).external_call_id,
                FinishCall(user_id=2, duration=30 + i, status_code="200"),
            )


def chain_order(sim: BitrixSimulator, ok_only: bool = True) -> dict[str, list[str]]:
    """EXTERNAL_CALL_ID -> methods in arrival order (register/finish/... matched by CALL_ID)."""
    by_call: dict[str, str] = {}
    order: dict[str, list[str]] = {}
    for entry in sim.recorder.entries:
        if ok_only and not entry.ok:
            continue
        if entry.method == "telephony.externalcall.register":
            external = str(entry.params.get("EXTERNAL_CALL_ID"))
            if entry.ok:
                by_call[entry.result["CALL_ID"]] = external
            order.setdefault(external, []).append("register")
        elif entry.method.startswith("telephony.externalcall."):
            external = by_call.get(str(entry.params.get("CALL_ID")), "?")
            order.setdefault(external, []).append(entry.method.rsplit(".", 1)[1])
    return order


@dataclass
class ServiceEnv:
    """The real service (aiohttp + storage) on a known port, and a simulated portal next to it."""

    sim: BitrixSimulator
    portal: Portal
    services: Any  # thoth_pbx.app.Services
    http: Any  # aiohttp TestClient
    public_url: str

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.services.sessions

    @property
    def admin(self) -> dict[str, str]:
        from thoth_pbx.clients.asterisk.ari import basic_auth_header

        return {"Authorization": basic_auth_header("admin", "correct-horse-battery")}

    async def install(self) -> int:
        """Install the app like the portal does and wait for its set-up jobs; returns the instance id."""
        status, body = await self.sim.install(self.portal, self.public_url + "/api/bitrix/install")
        assert status == 200, body
        await wait_until(lambda: all_done(self.sessions), what="install set-up jobs")
        return int(body["instance_id"])


@asynccontextmanager
async def service_env(
    tmp_path: Any,
    database_url: str,
    aiohttp_server: Any,
    aiohttp_client: Any,
    *,
    rate: float = 2.0,
    burst: int = 50,
    operating_window_s: float = 600.0,
    **env: str,
) -> AsyncIterator[ServiceEnv]:
    from tests.conftest import make_settings
    from thoth_pbx.app import build_app, open_services

    sim = BitrixSimulator(operating_window_s=operating_window_s)
    await sim.start()
    portal = sim.add_portal(
        users=[SimUser(u.id, u.name, u.last_name, u.extension, u.active) for u in USERS], rate=rate, burst=burst
    )
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    settings = make_settings(tmp_path, database_url, **{**bitrix_env(sim, public_url), **env})
    services = await open_services(settings)
    # fast retries so outage tests take seconds, not minutes
    services.outbox.backoff_base, services.outbox.backoff_cap = 0.05, 0.5
    services.bitrix.portals.client_options.update(retry_base_s=0.02)
    server = await aiohttp_server(build_app(services), port=port)
    client = await aiohttp_client(server)
    try:
        yield ServiceEnv(sim, portal, services, client, public_url)
    finally:
        await sim.stop()
