"""One REST client per installed portal; its tokens live (encrypted) in the app_instance row."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.bucket import Bucket, LeakyBucket, SharedBucket
from thoth_pbx.clients.bitrix.errors import NeedsReauth
from thoth_pbx.clients.bitrix.rest import BitrixClient, Grant, OAuthApp, PortalAuth, http_client
from thoth_pbx.clients.bitrix.transport import PortalHttp
from thoth_pbx.features.directory import AppInstance
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.rate import shared_reserve
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

REAUTH_HINT = "reinstall the thoth-pbx application on the Bitrix24 portal to authorise it again"


class PortalGone(Exception):
    """The app instance does not exist or the app was uninstalled: calls cannot succeed."""


class DbTokenStore:
    """TokenStore over the app_instance row (EncryptedText columns)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], instance_id: int) -> None:
        self._sessions = sessions
        self.instance_id = instance_id

    async def load(self) -> PortalAuth:
        async with self._sessions() as session:
            row = await session.get(AppInstance, self.instance_id)
            if row is None:
                raise PortalGone(f"app instance {self.instance_id} no longer exists")
            return PortalAuth(row.member_id, row.client_endpoint or "", row.access_token or "", row.refresh_token or "")

    async def save_grant(self, grant: Grant) -> None:
        async with self._sessions() as session, session.begin():
            row = await session.get(AppInstance, self.instance_id)
            if row is None:
                return
            apply_grant(row, grant)

    async def save_endpoint(self, client_endpoint: str) -> None:
        async with self._sessions() as session, session.begin():
            row = await session.get(AppInstance, self.instance_id)
            if row is None:
                return
            row.client_endpoint = client_endpoint
            row.domain = urlsplit(client_endpoint).hostname or row.domain

    async def mark_needs_reauth(self, detail: str) -> None:
        async with self._sessions() as session, session.begin():
            row = await session.get(AppInstance, self.instance_id)
            if row is None:
                return
            row.status = "needs_reauth"
            row.status_detail = f"token renewal refused ({detail}); {REAUTH_HINT}"


def apply_grant(row: AppInstance, grant: Grant) -> None:
    """Store a fresh token pair (the refresh token rotates on every renewal)."""
    row.access_token = grant.access_token
    if grant.refresh_token:
        row.refresh_token = grant.refresh_token
    row.expires_at = grant.expires_at
    if grant.client_endpoint:
        row.client_endpoint = grant.client_endpoint
    if grant.server_endpoint:
        row.server_endpoint = grant.server_endpoint
    if grant.scope:
        row.scope = grant.scope
    if row.status == "needs_reauth":
        row.status, row.status_detail = "active", None


def inherited_level(last_attempt: dt.datetime | None, rate: float, burst: int, *, now: dt.datetime) -> float:
    """What a fresh process assumes of the portal's bucket: full at the previous process's last
    delivery attempt (it may have just used it all, then crashed), drained at `rate` since."""
    if last_attempt is None:
        return 0.0
    if last_attempt.tzinfo is None:
        last_attempt = last_attempt.replace(tzinfo=dt.UTC)
    elapsed = (now - last_attempt).total_seconds()
    return max(0.0, burst - max(0.0, elapsed) * rate)


class Portals:
    """Hands out the shared client of a portal; `forget` after its tokens changed outside the client."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        oauth: OAuthApp | None,
        *,
        http: PortalHttp | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._sessions = sessions
        self.oauth = oauth
        self._own_http = http is None
        self.http = http or http_client()
        self.client_options = dict(client_options or {})  # BitrixClient keyword arguments
        self._clients: dict[int, BitrixClient] = {}
        self._buckets: dict[int, Bucket] = {}
        self._building: dict[int, asyncio.Future[BitrixClient]] = {}
        self._started = utcnow()
        self._retired: set[asyncio.Task[None]] = set()

    async def client(self, instance_id: int) -> BitrixClient:
        """The portal's client; `PortalGone` or `NeedsReauth` when no call can work now."""
        existing = self._clients.get(instance_id)
        if existing is not None:
            return existing
        # A burst of jobs for a cold portal reads its row once, and all of them resume together
        # (so their calls reach the client's queue in the same turn and leave as one batch).
        building = self._building.get(instance_id)
        if building is None:
            building = self._building[instance_id] = asyncio.ensure_future(self._build(instance_id))
            building.add_done_callback(lambda _: self._building.pop(instance_id, None))
        return await asyncio.shield(building)

    async def _build(self, instance_id: int) -> BitrixClient:
        async with self._sessions() as session:
            row = await session.get(AppInstance, instance_id)
            if row is None or row.status == "uninstalled":
                raise PortalGone(f"the app is not installed on portal instance {instance_id}")
            if row.status == "needs_reauth":
                raise NeedsReauth("invalid_grant", row.status_detail or REAUTH_HINT)
            if not (row.access_token and row.client_endpoint):
                raise NeedsReauth("NO_TOKENS", f"no tokens stored for instance {instance_id}; {REAUTH_HINT}")
            auth = PortalAuth(row.member_id, row.client_endpoint, row.access_token, row.refresh_token or "")
            rate, burst = float(row.rate_per_s), int(row.rate_burst)
            bucket = self._buckets.get(instance_id)
            if bucket is None:
                # attempts by an earlier process only: this one's own are in the bucket already
                last_attempt = await session.scalar(
                    select(func.max(OutboxJob.last_attempt_at)).where(
                        OutboxJob.app_instance_id == instance_id, OutboxJob.last_attempt_at < self._started
                    )
                )
                level = inherited_level(last_attempt, rate, burst, now=self._started)
            else:
                level = min(bucket.level, float(burst))
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self._buckets[instance_id] = self._new_bucket(instance_id, rate, burst, level)
        client = BitrixClient(
            auth,
            DbTokenStore(self._sessions, instance_id),
            self.oauth,
            self.http,
            rate_per_s=rate,
            burst=burst,
            bucket=bucket,
            **self.client_options,
        )
        self._clients[instance_id] = client
        return client

    def _new_bucket(self, instance_id: int, rate: float, burst: int, level: float) -> Bucket:
        """PostgreSQL: the portal's bucket is a row every instance counts into (outbox/rate.py);
        `level` only seeds a new row. SQLite: one process, the bucket is in memory."""
        engine = self._sessions.kw.get("bind")
        if engine is not None and engine.dialect.name == "postgresql":
            return SharedBucket(rate, burst, shared_reserve(engine, instance_id, rate, burst), level=level)
        return LeakyBucket(rate, burst, level=level)

    def cached(self, instance_id: int) -> BitrixClient | None:
        return self._clients.get(instance_id)

    def forget(self, instance_id: int) -> None:
        """Drop the cached client (new tokens, uninstall, changed limits); its queued calls still finish."""
        client = self._clients.pop(instance_id, None)
        if client is not None:
            task = asyncio.create_task(client.aclose(grace=30.0))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(c.aclose() for c in clients), *self._retired, return_exceptions=True)
        if self._own_http:
            await self.http.aclose()
