"""The declarative base every table derives from, its naming convention and column types.

Tables live with the code that owns them (features/*/models.py, outbox/models.py,
clients/meta/tables.py, store/setting.py); app.py imports them all, so `Base.metadata` is
complete by the time the service starts. Migrations are written by hand (store/migrations).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ColumnElement, MetaData, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from thoth_pbx.store.types import UtcDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def table_of(model: type[DeclarativeBase]) -> Table:
    """The mapped `Table` of a declarative model (typed: `__table__` is a FromClause to mypy)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UtcDateTime}


class Timestamps:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def on_server(column: Any, stored: str | None) -> ColumnElement[bool]:
    """Rows of one Asterisk server, by the value rows store for it: its name, or None (NULL) for
    the first server (settings `[[asterisk]]`, decisions D11)."""
    where: ColumnElement[bool] = column.is_(None) if stored is None else column == stored
    return where
