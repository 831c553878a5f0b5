"""Two instances on one PostgreSQL: a committed write to a watched table through one is seen by
the other's caches at once (NOTIFY with the transaction, LISTEN on a connection of its own);
a rolled-back write is not; a listener that reconnects treats everything as changed.

PostgreSQL: www.postgresql.org/docs/current/sql-notify.html (delivered on commit, never on
rollback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.bitrix import wait_until
from thoth_pbx.store import db
from thoth_pbx.store.changes import ChangeListener, TableChanges


@dataclass
class Instance:
    engine: AsyncEngine
    changes: TableChanges
    listener: ChangeListener


@pytest.fixture
async def two(postgres_server) -> AsyncIterator[tuple[Instance, Instance]]:  # type: ignore[no-untyped-def]
    _, url = postgres_server.create_database()
    url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    instances = []
    for _ in range(2):
        engine = db.create_engine(url)
        listener = ChangeListener.for_engine(engine)
        assert listener is not None
        instances.append(Instance(engine, TableChanges(engine, ("phone",)), listener))
    async with instances[0].engine.begin() as conn:
        await conn.execute(text("CREATE TABLE phone (id integer primary key, number text)"))
        await conn.execute(text("CREATE TABLE other (id integer primary key)"))
    for instance in instances:
        instance.listener.start()
        await wait_until(instance.listener.connected.is_set, what="the listener connected")
    yield instances[0], instances[1]
    for instance in instances:
        await instance.listener.stop()
        await instance.engine.dispose()


async def test_a_commit_through_one_instance_reaches_the_others_cache(two: tuple[Instance, Instance]) -> None:
    a, b = two
    seen = b.changes.generation
    async with a.engine.begin() as conn:
        await conn.execute(text("INSERT INTO phone (id, number) VALUES (1, '+15550100001')"))
    await wait_until(lambda: b.changes.generation > seen, what="instance b hears of the phone")
    assert a.changes.generation > 0  # and the writer's own cache, as before


async def test_a_rollback_or_another_table_says_nothing(two: tuple[Instance, Instance]) -> None:
    a, b = two
    async with a.engine.connect() as conn:
        transaction = await conn.begin()
        await conn.execute(text("INSERT INTO phone (id, number) VALUES (2, '+15550100002')"))
        await transaction.rollback()
    async with a.engine.begin() as conn:
        await conn.execute(text("INSERT INTO other (id) VALUES (1)"))
    seen = b.changes.generation
    # a committed phone write after them is the first thing b hears: it bumps exactly once
    async with a.engine.begin() as conn:
        await conn.execute(text("UPDATE phone SET number = '+15550100003' WHERE id = 2"))  # no row: still a write
        await conn.execute(text("INSERT INTO phone (id, number) VALUES (3, '+15550100003')"))
    await wait_until(lambda: b.changes.generation > seen, what="instance b hears of the commit")
    assert b.changes.generation == seen + 1  # one notification per table and transaction


async def test_a_listener_that_reconnects_assumes_everything_changed(two: tuple[Instance, Instance]) -> None:
    _, b = two
    seen = b.changes.generation
    async with b.engine.begin() as conn:  # the database ends the listener's session
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
            )
        )
    await wait_until(lambda: b.changes.generation > seen, timeout=20, what="the reconnect's bump")
    await wait_until(b.listener.connected.is_set, what="listening again")
