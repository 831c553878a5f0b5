"""A WhatsApp message as one `imconnector.send.messages` entry (pure).

Shapes: ../shared/reference/bitrix24-rest.md §2 (user.id/name/phone/skip_phone_validate,
message.id/date/text, chat.id; names: letters, spaces, hyphens and apostrophes, at most 25
characters). Every type gets a visible text: a type we cannot show yet says so, naming it.
Media files travel separately (media.py); their text is the caption or a label, so the chat
says what came even when the file cannot be fetched."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
from thoth_pbx.core.shapes import sub

_NAME_CHARS = re.compile(r"[^\w\s'\-]|[\d_]", re.UNICODE)


def clean_name(name: str | None) -> str:
    """What Bitrix24 accepts as a user name: letters, spaces, hyphens, apostrophes; <= 25 chars."""
    cleaned = " ".join(_NAME_CHARS.sub(" ", name or "").split())
    return cleaned[:25].strip() or "WhatsApp"


@dataclass(frozen=True)
class Sender:
    """Who wrote, as Meta describes them: the BSUID (contacts[].user_id or the message's
    from_user_id), the phone (`from`), the username and profile name when shared."""

    bsuid: str | None
    phone: str | None
    username: str | None
    name: str | None


def sender_of(message: Message, contact: Contact | None) -> Sender:
    profile = sub(contact.extra, "profile") if contact else {}
    username = (contact.extra.get("username") if contact else None) or profile.get("username")
    bsuid = (contact.user_id if contact else None) or message.extra.get("from_user_id")
    return Sender(
        str(bsuid) if bsuid else None,
        message.from_,
        str(username) if username else None,
        (contact.name if contact else None),
    )


_MEDIA_LABELS = {"image": "Image", "video": "Video", "audio": "Audio", "sticker": "Sticker", "document": "Document"}


def quoted_ids(message: Message) -> list[str]:
    """The wamids this message points at (a reply's context, a reaction's target)."""
    ids = []
    if message.context and isinstance(message.context.get("id"), str):
        ids.append(message.context["id"])
    body = message.body
    if isinstance(body, Reaction) and body.message_id:
        ids.append(body.message_id)
    return ids


def _quote(wamid: str | None, quotes: Mapping[str, str]) -> str:
    known = quotes.get(wamid or "")
    return f"«{known}»" if known else "an earlier message"


def media_of(message: Message) -> dict[str, Any] | None:
    """What media.py needs to fetch the file of a media message, or None."""
    body = message.body
    if not isinstance(body, Media) or not body.id:
        return None
    return {"id": body.id, "kind": body.type.value, "name": body.filename, "mime_type": body.mime_type}


def text_of(message: Message, quotes: Mapping[str, str] | None = None) -> str:
    quotes = quotes or {}
    body = message.body
    if isinstance(body, Text):
        text = body.body
    elif isinstance(body, Location):
        where = ", ".join(p for p in (body.name, body.address) if p)
        link = f"https://maps.google.com/?q={body.latitude},{body.longitude}" if body.latitude is not None else ""
        text = " ".join(p for p in ("[Location]", where, link) if p)
    elif isinstance(body, Reaction):
        target = _quote(body.message_id, quotes)
        text = f"[Reaction] {body.emoji} to {target}" if body.emoji else f"[Reaction removed from {target}]"
    elif isinstance(body, Button):
        text = body.text or body.payload or "[Button]"
    elif isinstance(body, Interactive):
        text = " - ".join(p for p in (body.title, body.description) if p) or f"[{body.kind or 'interactive'} reply]"
    elif isinstance(body, Contacts):
        names = [str((c.get("name") or {}).get("formatted_name") or "") for c in body.cards]
        phones = [str(p.get("phone")) for c in body.cards for p in (c.get("phones") or []) if isinstance(p, dict)]
        text = "[Contact] " + "; ".join(p for p in (*names, *phones) if p)
    elif isinstance(body, Media):
        label = "Voice message" if body.voice else _MEDIA_LABELS.get(body.type.value, body.type.value)
        if body.filename:
            label += f": {body.filename}"
        text = body.caption or f"[{label}]"
    elif isinstance(body, System):
        text = f"[WhatsApp] {body.body or body.kind}"
    else:
        assert isinstance(body, Unknown)
        text = f"[WhatsApp message of type '{message.type or 'unknown'}' that thoth-pbx cannot show yet]"
    if message.context and message.context.get("id"):
        text = f"[Reply to {_quote(str(message.context['id']), quotes)}] {text}"
    return text


def entry(message: Message, sender: Sender, key: str, quotes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The imconnector.send.messages entry; `key` is the customer's chat key (customers feature)."""
    user: dict[str, Any] = {"id": key, "name": clean_name(sender.name or sender.username)}
    if message.from_:
        user |= {"phone": "+" + message.from_.lstrip("+"), "skip_phone_validate": "Y"}
    date = int(message.timestamp) if message.timestamp and message.timestamp.isdigit() else None
    msg: dict[str, Any] = {"id": message.id, "text": text_of(message, quotes)}
    if date is not None:
        msg["date"] = date
    return {"user": user, "message": msg, "chat": {"id": key}}
