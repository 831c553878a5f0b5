"""The Stasis owner's election on a real PostgreSQL (features/calls/leadership.py): one session
holds the advisory lock, the others cannot take it until that session ends; an owner whose
session ends steps down, and a standby takes over; an owner cut off from the database steps
down before the server frees its lock, so the two never own at once.

PostgreSQL: https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS (a
session-level lock is held until released or the session ends),
https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-IDLE-SESSION-TIMEOUT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.support.bitrix import wait_until
from tests.support.tcp_proxy import FreezableProxy
from thoth_pbx.features.calls.leadership import AdvisoryLock, StasisOwnership, lock_key
from thoth_pbx.store import db

KEY = lock_key("http://127.0.0.1:8088", "thoth-pbx")
RETRY_S = 0.2


@pytest.fixture
async def dsn(postgres_server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    name, url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(name)


def new_lock(dsn: str, key: int = KEY, server_idle_s: float = 5.0) -> AdvisoryLock:
    return AdvisoryLock(dsn, key, timeout=RETRY_S, server_idle_s=server_idle_s)


async def lock_holder_pids(dsn: str) -> list[int]:
    """Backends holding our advisory lock (pg_locks splits a bigint key in two 32-bit halves)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = ($1::bigint & x'ffffffffffffffff'::bigint)",
            KEY,
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


async def terminate(dsn: str, pid: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


@dataclass
class Instance:
    """One instance's ownership, with what happened to it in order (shared log of all instances)."""

    name: str
    log: list[str]
    ownership: StasisOwnership = field(init=False)

    def start(self, lock: AdvisoryLock) -> None:
        async def deposed() -> None:
            self.log.append(f"{self.name} deposed")

        def elected() -> None:
            self.log.append(f"{self.name} elected")

        self.ownership = StasisOwnership("http://127.0.0.1:8088", lock, elected, deposed, retry_s=RETRY_S)
        self.ownership.start()


async def test_one_session_holds_the_lock_the_other_takes_it_when_that_session_ends(dsn: str) -> None:
    a, b, other = new_lock(dsn), new_lock(dsn), new_lock(dsn, key=lock_key("http://10.0.0.2:8088", "thoth-pbx"))
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        assert not await b.try_acquire()  # a standby retrying stays out
        assert await other.try_acquire()  # another Asterisk has its own owner
        await a.release()  # the session closes: the lock goes with it
        assert await b.try_acquire()
        assert not await a.try_acquire()
        (pid,) = await lock_holder_pids(dsn)
        await terminate(dsn, pid)  # the server ends b's session (an owner's death looks the same)
        await wait_until(b.lost.is_set, what="b hears its session ended")
        assert not await b.ping()
        assert await a.try_acquire()
    finally:
        for lock in (a, b, other):
            await lock.release()


async def test_the_owner_whose_session_ends_steps_down_and_the_standby_takes_over(dsn: str) -> None:
    log: list[str] = []
    a, b = Instance("a", log), Instance("b", log)
    a.start(new_lock(dsn))
    try:
        await wait_until(lambda: a.ownership.owner, what="a owns")
        b.start(new_lock(dsn))
        await wait_until(lambda: b.ownership.tries >= 3, what="b tried three times")
        assert not b.ownership.owner and b.ownership.status()["role"] == "standby"
        (pid,) = await lock_holder_pids(dsn)
        await terminate(dsn, pid)  # a's connection dies
        await wait_until(lambda: b.ownership.owner, what="b takes over")
        assert not a.ownership.owner and log[:3] == ["a elected", "a deposed", "b elected"]
        await wait_until(lambda: a.ownership.tries >= 2, what="a stands by")  # and does not take it back
        assert not a.ownership.owner
        await b.ownership.stop()  # a clean stop frees the lock at once
        await wait_until(lambda: a.ownership.owner, what="a takes over again")
        assert log[3:] == ["b deposed", "a elected"]
    finally:
        await a.ownership.stop()
        await b.ownership.stop()


async def test_an_owner_cut_off_from_the_database_steps_down_before_the_server_frees_its_lock(dsn: str) -> None:
    host, port = dsn.split("@", 1)[1].split("/", 1)[0].split(":")
    proxy = FreezableProxy(host, int(port))
    proxy_port = await proxy.start()
    log: list[str] = []
    a, b = Instance("a", log), Instance("b", log)
    # the owner talks to PostgreSQL through the cable we will cut; the server ends its session
    # after 2 s of silence, while the owner gives up after 3 tries of 0.2 s
    a.start(new_lock(dsn.replace(f":{port}/", f":{proxy_port}/"), server_idle_s=2.0))
    try:
        await wait_until(lambda: a.ownership.owner, what="a owns")
        b.start(new_lock(dsn))
        await wait_until(lambda: b.ownership.tries >= 2, what="b stands by")
        proxy.frozen.set()
        await wait_until(lambda: b.ownership.owner, timeout=30, what="b takes over")
        assert log == ["a elected", "a deposed", "b elected"]
        assert "stopped answering" in (a.ownership.error or "")
    finally:
        await b.ownership.stop()
        a_stop = asyncio.create_task(a.ownership.stop())
        await proxy.stop()
        await a_stop


async def test_sqlite_the_single_instance_always_owns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = db.create_engine(f"sqlite+thoth:///{tmp_path / 'thoth.sqlite3'}")
    try:
        assert AdvisoryLock.for_engine(engine, KEY, retry_s=1.0) is None
    finally:
        await engine.dispose()
    log: list[str] = []
    solo = Instance("solo", log)
    solo.ownership = StasisOwnership("http://127.0.0.1:8088", None, lambda: log.append("elected"), _nothing)
    solo.ownership.start()
    await wait_until(lambda: solo.ownership.owner, what="the single instance owns")
    assert solo.ownership.status()["election"] == "single instance"
    await solo.ownership.stop()
    assert log == ["elected"] and not solo.ownership.owner


async def _nothing() -> None:
    return None


async def test_an_owner_whose_app_another_connection_takes_says_so(asterisk, json_logs) -> None:  # type: ignore[no-untyped-def]
    """Asterisk 22 gives the app to the newer websocket and sends the older ApplicationReplaced
    (events.json, model ApplicationReplaced): a thoth-pbx outside the election (another database,
    ari_url spelled differently) would silently take our calls; the owner logs it as an error."""
    from thoth_pbx.clients.asterisk.ari import AriClient
    from thoth_pbx.core.settings import AriTarget

    target = AriTarget(asterisk.ari_base, asterisk.ari_user, asterisk.ari_password)
    ours, intruder = AriClient(target, "owned-app"), AriClient(target, "owned-app")
    seen: list[str] = []
    owner = StasisOwnership(target.base_url, None, ours.start, ours.stop)
    ours.on_event = owner.gate(lambda event: seen.append(str(event.get("type"))))
    owner.start()
    try:
        await ours.wait_connected(15)
        intruder.start()
        await intruder.wait_connected(15)
        await wait_until(lambda: "ApplicationReplaced" in seen, what="the owner told its app was taken")
        assert "another connection took the Stasis app" in json_logs.text
    finally:
        await intruder.stop()
        await owner.stop()
