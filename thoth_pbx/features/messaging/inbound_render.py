"""A WhatsApp message as one `imconnector.send.messages` entry (pure).

Shapes: ../shared/reference/bitrix24-rest.md §2 (user.id/name/phone/skip_phone_validate,
message.id/date/text, chat.id; names: letters, spaces, hyphens and apostrophes, at most 25
characters). Every type gets a visible text: a type we cannot show yet says so, naming it."""

from __future__ import annotations

import re
from typing import Any

from thoth_pbx.clients.meta.contents import (
    Button,
    Contacts,
    Interactive,
    Location,
    Media,
    Reaction,
    System,
    Text,
    Unknown,
)
from thoth_pbx.clients.meta.payloads import Contact, Message

_NAME_CHARS = re.compile(r"[^\w\s'\-]|[\d_]", re.UNICODE)


def clean_name(name: str | None) -> str:
    """What Bitrix24 accepts as a user name: letters, spaces, hyphens, apostrophes; <= 25 chars."""
    cleaned = " ".join(_NAME_CHARS.sub(" ", name or "").split())
    return cleaned[:25].strip() or "WhatsApp"


def customer_key(message: Message, contact: Contact | None) -> str:
    """The chat and user id of a customer: the WhatsApp id (phone) when Meta gives one, else the
    business-scoped user id (BSUID); issue 17 makes this a stored identity."""
    return message.from_ or (contact.user_id if contact else None) or "unknown"


def text_of(message: Message) -> str:
    body = message.body
    if isinstance(body, Text):
        text = body.body
    elif isinstance(body, Location):
        where = ", ".join(p for p in (body.name, body.address) if p)
        link = f"https://maps.google.com/?q={body.latitude},{body.longitude}" if body.latitude is not None else ""
        text = " ".join(p for p in ("[Location]", where, link) if p)
    elif isinstance(body, Reaction):
        text = f"[Reaction] {body.emoji} to message {body.message_id}" if body.emoji else "[Reaction removed]"
    elif isinstance(body, Button):
        text = body.text or body.payload or "[Button]"
    elif isinstance(body, Interactive):
        text = " - ".join(p for p in (body.title, body.description) if p) or f"[{body.kind or 'interactive'} reply]"
    elif isinstance(body, Contacts):
        names = [str((c.get("name") or {}).get("formatted_name") or "") for c in body.cards]
        phones = [str(p.get("phone")) for c in body.cards for p in (c.get("phones") or []) if isinstance(p, dict)]
        text = "[Contact] " + "; ".join(p for p in (*names, *phones) if p)
    elif isinstance(body, Media):
        caption = f": {body.caption}" if body.caption else ""
        text = f"[{body.type.value} received{caption}] (media files reach Open Lines in the next step of the bridge)"
    elif isinstance(body, System):
        text = f"[WhatsApp] {body.body or body.kind}"
    else:
        assert isinstance(body, Unknown)
        text = f"[WhatsApp message of type '{message.type or 'unknown'}' that thoth-pbx cannot show yet]"
    if message.context and message.context.get("id"):
        text = f"[Reply to message {message.context['id']}] {text}"
    return text


def entry(message: Message, contact: Contact | None) -> dict[str, Any]:
    key = customer_key(message, contact)
    user: dict[str, Any] = {"id": key, "name": clean_name(contact.name if contact else None)}
    if message.from_:
        user |= {"phone": "+" + message.from_.lstrip("+"), "skip_phone_validate": "Y"}
    date = int(message.timestamp) if message.timestamp and message.timestamp.isdigit() else None
    msg: dict[str, Any] = {"id": message.id, "text": text_of(message)}
    if date is not None:
        msg["date"] = date
    return {"user": user, "message": msg, "chat": {"id": key}}
