"""Column types: `EncryptedText` keeps secrets encrypted at rest.

The `SecretBox` is process-wide (installed once at start by `install_secret_box`) because
SQLAlchemy type decorators cannot be handed per-session state; tests install their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.secrets import SecretBox

_box: SecretBox | None = None


def install_secret_box(box: SecretBox) -> None:
    global _box
    _box = box


def secret_box() -> SecretBox:
    if _box is None:
        raise RuntimeError("no SecretBox installed: call install_secret_box() at start")
    return _box


class EncryptedText(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        register_secret(value)
        return secret_box().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        plain = secret_box().decrypt(value)
        register_secret(plain)
        return plain


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        stored: dt.datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=dt.UTC)
        return stored.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
