"""Typed contents of inbound WhatsApp messages (the object named by a message's `type`).

Shapes from Meta's "messages" webhook reference (developers.facebook.com/documentation/
business-messaging/whatsapp/webhooks/reference/messages/...: text, image, audio, video,
document, sticker, location, contacts, interactive, button, reaction, system). A type Meta adds
later is `MessageType.UNKNOWN` with its raw object kept, never an error: the bridge can still
say "unsupported message" in the chat."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from thoth_pbx.core.shapes import sub


class MessageType(enum.StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACTS = "contacts"
    INTERACTIVE = "interactive"
    BUTTON = "button"
    REACTION = "reaction"
    ORDER = "order"
    SYSTEM = "system"
    UNSUPPORTED = "unsupported"
    REQUEST_WELCOME = "request_welcome"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> MessageType:
        return cls.UNKNOWN


MEDIA_TYPES = (MessageType.IMAGE, MessageType.AUDIO, MessageType.VIDEO, MessageType.DOCUMENT, MessageType.STICKER)


@dataclass(frozen=True)
class Text:
    body: str


@dataclass(frozen=True)
class Media:
    """image/audio/video/document/sticker: fetched later through GET /{media id}."""

    type: MessageType
    id: str | None
    mime_type: str | None
    sha256: str | None
    caption: str | None = None
    filename: str | None = None  # document
    voice: bool = False  # audio recorded in the app
    animated: bool = False  # sticker


@dataclass(frozen=True)
class Location:
    latitude: float | None
    longitude: float | None
    name: str | None = None
    address: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Reaction:
    message_id: str | None
    emoji: str | None  # None or "": the reaction was removed


@dataclass(frozen=True)
class Button:
    """A quick-reply button of a template pressed by the customer."""

    text: str | None
    payload: str | None


@dataclass(frozen=True)
class Interactive:
    """A reply to an interactive message: button_reply, list_reply, nfm_reply, call_permission_reply..."""

    kind: str | None
    id: str | None = None
    title: str | None = None
    description: str | None = None
    reply: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contacts:
    cards: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class System:
    """E.g. `user_changed_number`: `wa_id` is the customer's new id."""

    body: str | None
    kind: str | None
    wa_id: str | None


@dataclass(frozen=True)
class Unknown:
    type: str | None
    raw: Any


Content = Text | Media | Location | Reaction | Button | Interactive | Contacts | System | Unknown


def parse_content(type_: str | None, raw: Any) -> Content:
    kind = MessageType(type_ or "unknown")
    obj = raw if isinstance(raw, dict) else {}
    if kind is MessageType.TEXT and isinstance(obj.get("body"), str):
        return Text(obj["body"])
    if kind in MEDIA_TYPES:
        return Media(
            kind,
            _s(obj.get("id")),
            _s(obj.get("mime_type")),
            _s(obj.get("sha256")),
            caption=_s(obj.get("caption")),
            filename=_s(obj.get("filename")),
            voice=obj.get("voice") is True,
            animated=obj.get("animated") is True,
        )
    if kind is MessageType.LOCATION:
        return Location(
            _f(obj.get("latitude")),
            _f(obj.get("longitude")),
            _s(obj.get("name")),
            _s(obj.get("address")),
            _s(obj.get("url")),
        )
    if kind is MessageType.REACTION:
        return Reaction(_s(obj.get("message_id")), _s(obj.get("emoji")))
    if kind is MessageType.BUTTON:
        return Button(_s(obj.get("text")), _s(obj.get("payload")))
    if kind is MessageType.INTERACTIVE:
        reply_kind = _s(obj.get("type"))
        reply = sub(obj, reply_kind) if reply_kind else {}
        return Interactive(reply_kind, _s(reply.get("id")), _s(reply.get("title")), _s(reply.get("description")), reply)
    if kind is MessageType.CONTACTS and isinstance(raw, list):
        return Contacts(tuple(c for c in raw if isinstance(c, dict)))
    if kind is MessageType.SYSTEM:
        return System(_s(obj.get("body")), _s(obj.get("type")), _s(obj.get("wa_id")))
    return Unknown(type_, raw)


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _f(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None
