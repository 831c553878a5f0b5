"""One encrypted value from the database, so start-up can tell whether the key file fits it."""

from __future__ import annotations

from sqlalchemy import Text, column, select, table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import EncryptedText


def _encrypted_columns() -> list[tuple[str, str]]:
    return [
        (tbl.name, col.name)
        for tbl in Base.metadata.sorted_tables
        for col in tbl.columns
        if isinstance(col.type, EncryptedText)
    ]


async def stored_secret_sample(engine: AsyncEngine) -> str | None:
    """The raw (still encrypted) text of one stored secret, or None for a database that holds no
    secret yet (new, or older than the table: a missing table or column counts as empty).

    Reads through plain `Text` columns, not the decrypting type: it runs before a key is chosen."""
    for table_name, column_name in _encrypted_columns():
        raw = column(column_name, Text())
        query = select(raw).select_from(table(table_name)).where(raw.is_not(None)).limit(1)
        try:
            async with engine.connect() as conn:
                value = (await conn.execute(query)).scalar()
        except DBAPIError as exc:
            if _is_missing_relation(exc):
                continue
            raise
        if value:
            return str(value)
    return None


def _is_missing_relation(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "no such table" in text or "no such column" in text or "does not exist" in text
