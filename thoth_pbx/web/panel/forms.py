"""From an HTML form to the API's JSON body and back: the panel has no validation of its own,
so a form error is the API's FieldError, shown next to the field it names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from multidict import MultiDictProxy

Form = MultiDictProxy[Any]


def text(form: Form, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def filled(form: Form, names: Iterable[str]) -> dict[str, Any]:
    """The fields the admin typed something into (a create: absent ones are the API's defaults)."""
    return {name: text(form, name) for name in names if text(form, name)}


def as_typed(form: Form, names: Iterable[str]) -> dict[str, Any]:
    """Every field as typed, an emptied one as null (an edit: clearing a field clears the value)."""
    return {name: text(form, name) or None for name in names}


def checkbox(form: Form, name: str) -> bool:
    return form.get(name) in ("on", "true", "1", "yes")


def errors_of(field: str, message: str, shown: Iterable[str]) -> tuple[dict[str, str], str | None]:
    """The error beside its field when the form shows that field, else above the form (naming it)."""
    base = field.removeprefix("trunk.").split("[")[0]
    if base in shown:
        return {base: message if base == field else f"{field}: {message}"}, None
    return {}, f"{field}: {message}"
