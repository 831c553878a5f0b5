"""The messaging bridge's pure rules: status order, Meta's media limits, operator text (signature,
quotes), error hints, settings, signed media links."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thoth_pbx.clients.meta.payloads import Message
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.messaging.bbcode import split_quote, split_signature
from thoth_pbx.features.messaging.hints import failure_notice
from thoth_pbx.features.messaging.history import moves_forward, preview
from thoth_pbx.features.messaging.inbound_render import media_of, quoted_ids, text_of
from thoth_pbx.features.messaging.media import MediaStore, StoredMedia, safe_name
from thoth_pbx.features.messaging.outbound import parts_of
from thoth_pbx.features.messaging.settings import MessagingSettings
from thoth_pbx.features.messaging.whatsapp_media import plan


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        ("queued", "sent", True),
        ("sent", "delivered", True),
        ("sent", "read", True),
        ("read", "delivered", False),  # Meta promises no order: never backwards
        ("delivered", "sent", False),
        ("sent", "failed", True),
        ("delivered", "failed", False),
        ("failed", "read", False),
        ("received", "in_bitrix", True),
        ("in_bitrix", "read", True),
    ],
)
def test_statuses_only_move_forward(current: str, new: str, moves: bool) -> None:
    assert moves_forward(current, new) is moves


def test_meta_media_limits() -> None:
    assert plan("image/jpeg", 1000).kind == "image"
    assert plan("application/pdf; charset=binary", 50 * 1024 * 1024).kind == "document"
    assert plan("audio/ogg", None).kind == "audio"
    assert plan("image/webp", 400 * 1024).kind == "sticker"
    too_big = plan("image/png", 6 * 1024 * 1024)
    assert too_big.kind is None and "at most 5 MB for images" in (too_big.refusal or "")
    unknown = plan("application/zip", 10)
    assert unknown.kind is None and "application/zip" in (unknown.refusal or "")


def test_signature_and_quotes_of_an_operator_message() -> None:
    assert split_signature("[b]Anna Admin:[/b] [br]Hello") == ("[b]Anna Admin:[/b] [br]", "Hello")
    assert split_signature("Hello [b]x:[/b]") == ("", "Hello [b]x:[/b]")
    dashes = "-" * 54
    quoted, rest = split_quote(
        f"{dashes}[br]Ivan Petrov [04.12.2026 10:15][br]Where is my order?[br]{dashes}[br]On its way"
    )
    assert (quoted, rest) == ("Where is my order?", "On its way")
    assert split_quote("[quote]Is it [b]red[/b]?[/quote] Yes") == ("Is it *red*?", "Yes")
    assert split_quote("no quote here") == (None, "no quote here")


def test_an_operator_message_becomes_its_parts() -> None:
    message = {
        "message": {
            "text": "[b]Anna:[/b] [br]",
            "files": {
                "0": {
                    "name": "a.pdf",
                    "downloadLink": "https://p.example/d/1",
                    "mime": "application/pdf",
                    "size": "10",
                },
                "1": {"name": "b.png", "link": "https://p.example/d/2", "mime": "image/png", "size": 20},
            },
        }
    }
    quoted, parts = parts_of(message, keep_signature=True)
    assert quoted is None
    assert [p["type"] for p in parts] == ["file", "file"]
    assert parts[0]["caption"] == "*Anna:*" and "caption" not in parts[1]  # a file alone says who sent it
    assert parts[1]["url"] == "https://p.example/d/2" and parts[1]["size"] == 20
    _, parts = parts_of({"message": {"text": "[b]Anna:[/b] [br]Hi"}}, keep_signature=False)
    assert parts == [{"type": "text", "text": "Hi"}]


def test_failure_hints_name_the_code() -> None:
    assert failure_notice(131047, "Re-engagement message") == (
        "The message was not delivered (WhatsApp error 131047): more than 24 hours have passed since the "
        "customer last wrote: only an approved template can be sent now, as template-NAME+LANG+value1|value2 "
        "(header=URL or header=text, buttonN=value for the rest)."
    )
    assert "Something new" in failure_notice(139999, "Something new")


def test_inbound_quotes_and_media_labels() -> None:
    reply = Message.from_dict(
        {"id": "w2", "from": "1555", "type": "text", "text": {"body": "yes"}, "context": {"id": "w1"}}
    )
    assert quoted_ids(reply) == ["w1"]
    assert text_of(reply, {"w1": "Is it red?"}) == "[Reply to «Is it red?»] yes"
    assert text_of(reply) == "[Reply to an earlier message] yes"
    reaction = Message.from_dict({"id": "w3", "type": "reaction", "reaction": {"message_id": "w1", "emoji": "👍"}})
    assert text_of(reaction, {"w1": "Is it red?"}) == "[Reaction] 👍 to «Is it red?»"
    voice = Message.from_dict(
        {"id": "w4", "type": "audio", "audio": {"id": "m1", "mime_type": "audio/ogg", "sha256": "s", "voice": True}}
    )
    assert text_of(voice) == "[Voice message]"
    assert media_of(voice) == {"id": "m1", "kind": "audio", "name": None, "mime_type": "audio/ogg"}
    document = Message.from_dict(
        {"id": "w5", "type": "document", "document": {"id": "m2", "mime_type": "application/pdf", "filename": "x.pdf"}}
    )
    assert text_of(document) == "[Document: x.pdf]"


def test_settings_name_the_bad_field() -> None:
    assert MessagingSettings.from_json({}).messages_per_s == 80
    with pytest.raises(FieldError) as caught:
        MessagingSettings.from_json({"messages_per_s": 0})
    assert caught.value.field == "messaging.messages_per_s"
    with pytest.raises(FieldError) as caught:
        MessagingSettings.from_json({"media_max_mb": 500})
    assert caught.value.field == "messaging.media_max_mb"
    with pytest.raises(FieldError) as caught:
        MessagingSettings.from_json({"signature": True})
    assert caught.value.field == "messaging.signature"


def test_preview_and_safe_names() -> None:
    assert preview("a\n  b") == "a b" and len(preview("x" * 500)) == 200
    assert safe_name("../../etc/passwd", "text/plain", "document") == "etc_passwd.txt"
    assert safe_name(None, "image/jpeg", "image") == "image.jpg"


def test_signed_media_links_expire_and_resist_tampering(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = MediaStore(
        None,  # type: ignore[arg-type]  # no Graph needed to sign and open
        tmp_path,
        b"k" * 32,
        "https://thoth.example",
        max_bytes=10,
        ttl_s=600,
        clock=lambda: now[0],
    )
    file_id = "a" * 40
    (tmp_path / f"{file_id}.bin").write_bytes(b"data")
    (tmp_path / f"{file_id}.json").write_text(json.dumps({"name": "x.jpg", "mime_type": "image/jpeg", "size": 4}))
    link = store.link(StoredMedia(file_id, "x.jpg", "image/jpeg", 4))
    assert link.startswith(f"https://thoth.example/api/media/{file_id}/x.jpg?expires=1000600&sig=")
    sig = link.rsplit("sig=", 1)[1]
    assert store.open(file_id, "1000600", sig) == (tmp_path / f"{file_id}.bin", "image/jpeg")
    assert store.open(file_id, "1000601", sig) is None  # a longer life is not signed
    assert store.open("b" * 40, "1000600", sig) is None
    now[0] += 601
    assert store.open(file_id, "1000600", sig) is None  # expired
