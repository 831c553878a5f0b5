"""Reading the PHP-style forms Bitrix24's servers post (events, the install callback, the SMS
provider's handler): anyone can post to those URLs, so the cheap checks come first and every
step is bounded (docs/security.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from thoth_pbx.clients.bitrix import phpquery
from thoth_pbx.core.validation import FieldError

MAX_FORM = 1024 * 1024
READ_CHUNK = 64 * 1024


async def read_body(request: web.Request, limit: int = MAX_FORM) -> bytes:
    """The body, refused with 413 as soon as the bytes actually read pass `limit`
    (Content-Length is only a claim: a chunked body has none)."""
    if request.content_length is not None and request.content_length > limit:
        raise FieldError("body", f"is larger than {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise FieldError("body", f"is larger than {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: web.Request, *, needs_token: bool = False) -> dict[str, Any]:
    """Bitrix posts PHP-style form fields (`auth[member_id]=...`); parse them into nested dicts.

    Cheap checks first, since anyone can post here: content type, size on the bytes read,
    a bounded flat parse, the presence of the application token (events), and only then the
    nested decode, itself linear and bounded in fields, depth and key length.
    """
    if request.content_type != "application/x-www-form-urlencoded":
        raise FieldError("body", "must be application/x-www-form-urlencoded, as Bitrix24 sends it", 415)
    body = await read_body(request)
    try:
        pairs = phpquery.parse_pairs(body)
        if needs_token:
            _require_token(pairs)
        return phpquery.decode_pairs(pairs)
    except phpquery.FormLimit as exc:
        raise FieldError("body", str(exc)) from None


def _require_token(pairs: list[tuple[str, str]]) -> None:
    """An event without `auth[application_token]` is refused before any nested parse or query.
    (ONAPPINSTALL posted here carries no saved token yet: it is verified at the OAuth server.)"""
    fields = {key: value for key, value in pairs if key in ("event", "auth[application_token]")}
    if fields.get("event", "").strip().upper() == "ONAPPINSTALL":
        return
    if not fields.get("auth[application_token]"):
        raise FieldError("auth[application_token]", "does not match the token saved at install", 401)
