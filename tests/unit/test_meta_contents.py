"""Inbound message contents as typed models, from the samples of Meta's messages webhook reference
(developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/)."""

from __future__ import annotations

import pytest

from thoth_pbx.clients.meta.contents import (
    Button,
    Contacts,
    Interactive,
    Location,
    Media,
    MessageType,
    Reaction,
    System,
    Text,
    Unknown,
    parse_content,
)
from thoth_pbx.clients.meta.payloads import Message


def test_text_message_through_the_model() -> None:
    message = Message.from_dict(
        {
            "from": "16505551234",
            "id": "wamid.A",
            "timestamp": "1749416383",
            "type": "text",
            "text": {"body": "Does it come in another color?"},
        }
    )
    assert message.kind is MessageType.TEXT and message.body == Text("Does it come in another color?")
    assert message.text == "Does it come in another color?"


@pytest.mark.parametrize(
    ("type_", "raw", "expected"),
    [
        (
            "image",
            {"caption": "Red", "mime_type": "image/jpeg", "sha256": "abc=", "id": "1003383421387256"},
            Media(MessageType.IMAGE, "1003383421387256", "image/jpeg", "abc=", caption="Red"),
        ),
        (
            "audio",
            {"mime_type": "audio/ogg; codecs=opus", "sha256": "x=", "id": "2", "voice": True},
            Media(MessageType.AUDIO, "2", "audio/ogg; codecs=opus", "x=", voice=True),
        ),
        (
            "document",
            {"caption": "Invoice", "filename": "inv.pdf", "mime_type": "application/pdf", "sha256": "y", "id": "3"},
            Media(MessageType.DOCUMENT, "3", "application/pdf", "y", caption="Invoice", filename="inv.pdf"),
        ),
        (
            "sticker",
            {"mime_type": "image/webp", "sha256": "z", "id": "4", "animated": False},
            Media(MessageType.STICKER, "4", "image/webp", "z"),
        ),
        (
            "location",
            {
                "address": "1 Hacker Way",
                "latitude": 37.483307,
                "longitude": -122.148981,
                "name": "Meta HQ",
                "url": "https://meta.com",
            },
            Location(37.483307, -122.148981, "Meta HQ", "1 Hacker Way", "https://meta.com"),
        ),
        ("reaction", {"message_id": "wamid.B", "emoji": "\U0001f44d"}, Reaction("wamid.B", "\U0001f44d")),
        ("reaction", {"message_id": "wamid.B"}, Reaction("wamid.B", None)),  # removed
        ("button", {"payload": "No", "text": "No"}, Button("No", "No")),
        (
            "interactive",
            {"type": "list_reply", "list_reply": {"id": "row-1", "title": "Priority", "description": "24h"}},
            Interactive(
                "list_reply", "row-1", "Priority", "24h", {"id": "row-1", "title": "Priority", "description": "24h"}
            ),
        ),
        (
            "system",
            {"body": "User A changed from 1 to 2", "wa_id": "12195555358", "type": "user_changed_number"},
            System("User A changed from 1 to 2", "user_changed_number", "12195555358"),
        ),
    ],
)
def test_documented_contents(type_: str, raw: object, expected: object) -> None:
    assert parse_content(type_, raw) == expected


def test_contacts_and_the_unknown() -> None:
    cards = [{"name": {"formatted_name": "Anna"}, "phones": [{"phone": "+1555"}]}]
    assert parse_content("contacts", cards) == Contacts(tuple(cards))
    newer = parse_content("payment_request", {"amount": 1})
    assert isinstance(newer, Unknown) and newer.raw == {"amount": 1}
    assert MessageType("payment_request") is MessageType.UNKNOWN
    assert isinstance(parse_content("text", {"body": 5}), Unknown)  # a broken text is not a Text
