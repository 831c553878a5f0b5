"""What the Meta webhook needs of the directory: accounts by api-key, phones by phone number id."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.inbox import RoutedPhone
from thoth_pbx.clients.meta.webhook import AccountKeys
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.features.directory.models import Phone, WabaAccount


class AccountCache:
    """api-key -> account. `invalidate()` on any directory change; a short TTL also covers
    changes made by another process (the CLI). Keys live only in memory (like the decrypted
    account itself); the database is searched by the key's HMAC fingerprint."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, ttl: float = 30.0) -> None:
        self._sessions = sessions
        self._box = box
        self._ttl = ttl
        self._hits: dict[str, tuple[float, AccountKeys | None]] = {}
        self._loading: dict[str, asyncio.Future[AccountKeys | None]] = {}  # one query per key at a time
        self._generation = 0

    def invalidate(self, *_: Any) -> None:
        self._generation += 1
        self._hits.clear()

    async def by_api_key(self, api_key: str | None) -> AccountKeys | None:
        if not api_key or len(api_key) > 200:
            return None
        now = time.monotonic()
        hit = self._hits.get(api_key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        loading = self._loading.get(api_key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[AccountKeys | None] = asyncio.get_running_loop().create_future()
        self._loading[api_key] = future
        generation = self._generation
        try:
            keys = await self._load(self._box.fingerprint(api_key))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # marked retrieved: the waiters re-raise it
            raise
        finally:
            self._loading.pop(api_key, None)
        future.set_result(keys)
        if generation == self._generation:  # not invalidated while loading
            if len(self._hits) > 10_000:  # bounded even under a flood of random keys
                self._hits.clear()
            self._hits[api_key] = (now, keys)
        return keys

    async def _load(self, fingerprint: str) -> AccountKeys | None:
        async with self._sessions() as session:
            account = await session.scalar(select(WabaAccount).where(WabaAccount.api_key_fingerprint == fingerprint))
            if account is None:
                return None
            pnids = (
                await session.scalars(select(Phone.phone_number_id).where(Phone.waba_account_id == account.id))
            ).all()
            register_secret(account.app_secret)
            return AccountKeys(account.id, account.waba_id, account.app_secret, account.verify_token, frozenset(pnids))


async def phones_by_pnid(session: AsyncSession, pnids: set[str]) -> dict[str, RoutedPhone]:
    if not pnids:
        return {}
    rows = (
        await session.execute(
            select(Phone.id, Phone.number, Phone.phone_number_id, Phone.waba_account_id, Phone.app_instance_id).where(
                Phone.phone_number_id.in_(pnids)
            )
        )
    ).all()
    return {
        r.phone_number_id: RoutedPhone(r.id, r.number, r.phone_number_id, r.waba_account_id, r.app_instance_id)
        for r in rows
    }
