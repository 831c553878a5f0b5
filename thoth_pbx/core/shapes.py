"""Reading nested JSON that came from outside (Meta, Bitrix24) without trusting its shape."""

from __future__ import annotations

from typing import Any


def sub_or_none(doc: Any, key: str) -> dict[str, Any] | None:
    """`doc[key]` when `doc` is a dict and that value is a dict too, else None."""
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else None


def sub(doc: Any, key: str) -> dict[str, Any]:
    """`doc[key]` when `doc` is a dict and that value is a dict too, else `{}`."""
    return sub_or_none(doc, key) or {}


def as_int(value: Any) -> int | None:
    """An integer from outside (`5`, `"5"`), or None for absent, empty, boolean or non-numeric values."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
