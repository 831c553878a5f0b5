"""The inline SQLite driver (store/sqlite_inline.py): no thread, no sleeping on a lock on the
event loop, checkpoints off the loop; and the change counter the call-context cache relies on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select, text, update

from thoth_pbx.store import db
from thoth_pbx.store.changes import TableChanges
from thoth_pbx.store.setting import Setting


async def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = db.create_engine(f"sqlite+thoth:///{tmp_path / 'inline.sqlite3'}")
    await db.upgrade(engine)
    return engine


async def test_a_writer_waiting_for_the_lock_never_blocks_the_event_loop(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    sessions = db.session_factory(engine)
    ticks = 0
    holding = asyncio.Event()
    release = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def first_writer() -> None:  # holds SQLite's write lock across an await
        async with sessions() as session, session.begin():
            session.add(Setting(key="first", value={}))
            await session.flush()
            holding.set()
            await release.wait()

    async def second_writer() -> None:
        await holding.wait()
        async with sessions() as session, session.begin():
            session.add(Setting(key="second", value={}))

    tick_task = asyncio.create_task(ticker())
    first = asyncio.create_task(first_writer())
    second = asyncio.create_task(second_writer())
    await holding.wait()
    seen = ticks
    while ticks < seen + 10:  # the loop runs on while the second writer waits for the lock
        await asyncio.sleep(0.005)
    assert not second.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    tick_task.cancel()
    async with sessions() as session:
        assert sorted((await session.scalars(select(Setting.key))).all()) == ["first", "second"]
    await engine.dispose()


async def test_commits_never_checkpoint_the_checkpointer_does(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    sessions = db.session_factory(engine)
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 0
    database = tmp_path / "inline.sqlite3"
    before = database.stat().st_size
    for batch in range(6):  # ~6 MB: SQLite's default would checkpoint every ~4 MB of log
        async with sessions() as session, session.begin():
            for i in range(500):
                session.add(Setting(key=f"k{batch}-{i}", value={"blob": "x" * 2000}))
    assert database.stat().st_size == before  # everything still in the WAL: no commit checkpointed
    checkpointer = db.checkpointer(engine)
    assert checkpointer is not None
    await asyncio.to_thread(checkpointer.checkpoint)
    assert database.stat().st_size > before + 5_000_000 and checkpointer.checkpoints == 1
    await engine.dispose()


async def test_committed_writes_to_watched_tables_bump_the_change_counter(database_url: str) -> None:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    changes = TableChanges(engine, ("setting",))
    async with sessions() as session, session.begin():
        session.add(Setting(key="a", value={}))
    after_insert = changes.generation
    assert after_insert > 0
    async with sessions() as session:
        await session.scalar(select(Setting))  # a read changes nothing
    async with sessions() as session, session.begin():
        await session.execute(text("SELECT 1"))
    assert changes.generation == after_insert
    async with sessions() as session:
        async with session.begin():
            await session.execute(update(Setting).values(value={"x": 1}))
            await session.rollback()  # a rolled back write changes nothing
    assert changes.generation == after_insert
    async with sessions() as session, session.begin():
        await session.execute(update(Setting).values(value={"x": 2}))
    assert changes.generation > after_insert
    await engine.dispose()


async def test_a_write_bumps_only_the_watchers_of_its_table(database_url: str) -> None:
    """Several caches watch one engine (call contexts: phones and portals; messaging: customers):
    a customer row written by every new caller must not expire the call contexts."""
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    settings = TableChanges(engine, ("setting",))
    phones = TableChanges(engine, ("phone",))
    async with sessions() as session, session.begin():
        session.add(Setting(key="b", value={}))
    assert settings.generation > 0
    assert phones.generation == 0
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE phone SET number = number"))
    assert phones.generation > 0
    await engine.dispose()


async def test_a_hot_path_insert_waits_for_a_locked_database_by_awaiting(tmp_path: Path) -> None:
    from thoth_pbx.store.fast_insert import insert_returning_id

    engine = await _engine(tmp_path)
    sessions = db.session_factory(engine)
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with sessions() as session, session.begin():
            session.add(Setting(key="holder", value={}))
            await session.flush()
            holding.set()
            await release.wait()

    async def hot() -> int:
        await holding.wait()
        async with sessions() as session, session.begin():
            return await insert_returning_id(session, Setting.__table__, {"key": "hot", "value": {"n": 1}})

    first, second = asyncio.create_task(holder()), asyncio.create_task(hot())
    await holding.wait()
    for _ in range(20):  # the loop keeps running while the insert waits for the lock
        await asyncio.sleep(0.002)
    assert not second.done()
    release.set()
    await asyncio.wait_for(first, 10)
    new_id = await asyncio.wait_for(second, 10)
    async with sessions() as session:
        row = await session.get(Setting, new_id)
        assert row is not None and row.key == "hot" and row.value == {"n": 1}
    await engine.dispose()


async def test_closing_a_session_takes_no_turn_of_the_event_loop(tmp_path: Path) -> None:
    """SQLAlchemy closes an `async with` session in a shielded task of its own: two turns of the
    loop, each waiting behind everything else ready on a busy service. The inline driver's
    sessions close in place (nothing in their close can be interrupted)."""
    engine = await _engine(tmp_path)
    sessions = db.session_factory(engine)
    others: list[str] = []
    async with sessions() as session, session.begin():
        session.add(Setting(key="k", value={}))
        asyncio.get_running_loop().call_soon(others.append, "other work")
    assert others == []  # the session is closed (and committed) before anything else ran
    async with sessions() as session:
        assert await session.scalar(select(Setting.key)) == "k"
    await engine.dispose()
