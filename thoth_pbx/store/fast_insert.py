"""`INSERT ... RETURNING id` for the hot paths (a call's row, every outbox job).

On our inline SQLite driver (sqlite_inline.py) the statement is compiled once per table and
column set and run straight on the driver's connection, inside the session's transaction;
values still go through the columns' own SQLAlchemy types (UTC datetimes, JSON, booleans)
and the columns' Python defaults, so the row is byte for byte what the ORM would write.
Measured on this box with cold caches (a call arrives every few hundred ms): the ORM's
flush of a call row and its register job costs 2.2 ms of CPU, this 1.2 ms (docs/decisions.md D7).
Elsewhere (PostgreSQL) it is a plain Core insert.

Not seen by engine events (store/changes.py): never use it for a table a cache watches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from thoth_pbx.store import sqlite_inline


@dataclass(frozen=True)
class _Statement:
    sql: str
    names: tuple[str, ...]  # parameter order
    processors: tuple[Callable[[Any], Any] | None, ...]


@dataclass(frozen=True)
class _Columns:
    keys: frozenset[str]
    defaults: tuple[tuple[str, Any], ...]  # (key, ColumnDefault) of the columns Python fills in


_compiled: dict[tuple[str, str, tuple[str, ...]], _Statement] = {}
_columns: dict[Table, _Columns] = {}  # per table: read once, not per row (a measured hot spot)


async def insert_returning_id(session: AsyncSession, table: Table, values: Mapping[str, Any]) -> int:
    """Insert one row in the session's transaction; returns its primary key `id`."""
    columns = _columns_of(table)
    unknown = values.keys() - columns.keys
    if unknown:
        raise ValueError(f"{table.name} has no column {sorted(unknown)[0]!r}")
    dialect = session.bind.dialect if session.bind is not None else None
    if dialect is None or dialect.driver != sqlite_inline.DRIVER:
        return int((await session.execute(insert(table).values(**values).returning(table.c.id))).scalar_one())
    row = _with_defaults(columns, values)
    statement = _statement(dialect, table, tuple(row))
    params = [p(row[name]) if p else row[name] for name, p in zip(statement.names, statement.processors, strict=False)]

    def insert_now(sync_session: Session) -> int | None:  # one greenlet hop for connection + insert
        driver: sqlite_inline.Connection = sync_session.connection().connection.driver_connection  # type: ignore[assignment]
        return driver.insert_now(statement.sql, params)

    new_id = await session.run_sync(insert_now)
    if new_id is not None:
        return new_id
    # locked by another writer: wait for it by awaiting (never by sleeping on the loop)
    raw: Any = (await (await session.connection()).get_raw_connection()).driver_connection
    cursor = raw.cursor()
    try:
        await cursor.execute(statement.sql, params)
        (new_id,) = await cursor.fetchone()
    finally:
        await cursor.close()
    return int(new_id)


def _columns_of(table: Table) -> _Columns:
    found = _columns.get(table)
    if found is None:
        defaults = tuple(
            (column.key, column.default)
            for column in table.columns
            if not column.primary_key and column.default is not None
        )
        found = _columns[table] = _Columns(frozenset(table.c.keys()), defaults)
    return found


def _with_defaults(columns: _Columns, values: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(values)
    for key, default in columns.defaults:
        if key in row:
            continue
        if getattr(default, "is_callable", False):
            row[key] = default.arg(None)  # wrapped to take a context
        elif getattr(default, "is_scalar", False):
            row[key] = default.arg
        # else a SQL expression or sequence: let the database apply it
    return row


def _statement(dialect: Dialect, table: Table, names: tuple[str, ...]) -> _Statement:
    key = (dialect.name, table.name, names)
    found = _compiled.get(key)
    if found is None:
        stmt = insert(table).values({name: bindparam(name) for name in names}).returning(table.c.id)
        compiled = stmt.compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())
        columns: list[Column[Any]] = [table.c[name] for name in order]
        processors = tuple(column.type._cached_bind_processor(dialect) for column in columns)
        found = _compiled[key] = _Statement(compiled.string, order, processors)
    return found
