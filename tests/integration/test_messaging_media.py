"""Files both ways with both simulators: a customer's WhatsApp media reaches the Open Lines chat
as a link the simulated portal fetches itself (getting exactly the bytes Meta served), and an
operator's files reach the customer as uploaded WhatsApp media of the right type, or a notice
when WhatsApp would refuse them.

Meta: developers.facebook.com/docs/whatsapp/cloud-api/reference/media (retrieve, download,
upload); Bitrix24: apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-send-messages.html
(message.files), events/on-im-connector-message-add.html (files in real payloads)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from tests.support.bitrix import wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix.state import SYSTEM
from thoth_pbx.sandbox.meta.state import FailRule

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
PDF = b"%PDF-1.4\n" + os.urandom(4096)
OGG = b"OggS" + os.urandom(1024)


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        yield b


async def _customer_sends(wa: Bridge, wamid: str, kind: str, data: bytes, mime: str, **extra: str) -> None:
    media_id = wa.meta.add_media(SEED.phone_number_id, data, mime)
    change = meta_sim.media_message_change(
        SEED.phone_number_id,
        SEED.display_phone_number,
        CUSTOMER,
        kind,
        media_id,
        mime,
        hashlib.sha256(data).hexdigest(),
        wamid=wamid,
        **extra,
    )
    await wa.post(meta_sim.delivery(SEED.waba_id, [change]))


async def test_customer_media_reaches_the_chat_as_a_file_the_portal_fetched(wa: Bridge) -> None:
    await _customer_sends(wa, "wamid.IMG", "image", PNG, "image/png", caption="Is this the red one?")
    await _customer_sends(wa, "wamid.VOICE", "voice", OGG, "audio/ogg")
    await _customer_sends(wa, "wamid.DOC", "document", PDF, "application/pdf", filename="invoice 12.pdf")
    await wait_until(lambda: len(wa.in_bitrix()) == 3, what="three messages in Bitrix24")
    await wa.env.sim.files_fetched()
    image, voice, document = wa.in_bitrix()
    assert image["message"]["text"] == "Is this the red one?"
    assert voice["message"]["text"] == "[Voice message]"
    assert document["message"]["text"] == "[Document: invoice 12.pdf]"
    assert document["message"]["files"][0]["name"] == "invoice_12.pdf"
    for entry in (image, voice, document):
        (file,) = entry["message"]["files"]
        assert file["url"].startswith(wa.env.public_url + "/api/media/")
    chat = wa.env.portal.chat("thoth_whatsapp", wa.line_id, CUSTOMER)
    assert chat is not None
    fetched = {m.external_id: m.files[0] for m in chat.messages if m.files}
    for wamid, data in (("wamid.IMG", PNG), ("wamid.VOICE", OGG), ("wamid.DOC", PDF)):
        assert fetched[wamid].ok and fetched[wamid].sha256 == hashlib.sha256(data).hexdigest()
    # the links are signed: a changed one gets nothing
    url = image["message"]["files"][0]["url"]
    resp = await wa.env.http.get(url.removeprefix(wa.env.public_url).replace("sig=", "sig=0"))
    assert resp.status == 404


async def test_a_graph_media_failure_retries_and_is_never_lost(wa: Bridge) -> None:
    wa.meta.fail_next(FailRule(code=131000, method="GET", times=2))
    await _customer_sends(wa, "wamid.LATE", "image", PNG, "image/png")
    await wait_until(lambda: len(wa.in_bitrix()) == 1, timeout=30, what="the image after Meta recovered")
    (entry,) = wa.in_bitrix()
    assert entry["message"]["id"] == "wamid.LATE" and len(entry["message"]["files"]) == 1
    await wa.env.sim.files_fetched()
    chat = wa.env.portal.chat("thoth_whatsapp", wa.line_id, CUSTOMER)
    assert chat is not None and chat.messages[0].files[0].ok


async def test_operator_files_reach_the_customer_as_whatsapp_media(wa: Bridge) -> None:
    await wa.customer_writes("Send me the offer", wamid="wamid.ASK")
    await wait_until(lambda: len(wa.in_bitrix()) == 1, what="the question")
    await wa.env.sim.operator_writes(
        wa.env.portal,
        wa.line_id,
        CUSTOMER,
        "Here it is",
        files=[("photo.png", PNG, "image/png"), ("offer.pdf", PDF, "application/pdf")],
    )
    await wait_until(lambda: len(wa.phone.sent) == 3, what="text, image and document at Meta")
    text, image, document = wa.phone.sent
    assert text["type"] == "text" and text["text"]["body"] == "*Anna Admin:*\nHere it is"
    assert image["type"] == "image" and set(image["image"]) == {"id"}
    assert document["type"] == "document" and document["document"]["filename"] == "offer.pdf"
    assert wa.meta.media[image["image"]["id"]].data == PNG
    assert wa.meta.media[document["document"]["id"]].data == PDF


async def test_a_file_whatsapp_refuses_gets_a_notice_not_a_send(wa: Bridge) -> None:
    await wa.customer_writes("Send me the archive", wamid="wamid.ZIP")
    await wait_until(lambda: len(wa.in_bitrix()) == 1, what="the question")
    await wa.env.sim.operator_writes(
        wa.env.portal, wa.line_id, CUSTOMER, "", files=[("all.zip", b"PK\x03\x04" + os.urandom(64), "application/zip")]
    )
    chat = wa.env.portal.chat("thoth_whatsapp", wa.line_id, CUSTOMER)
    assert chat is not None
    await wait_until(lambda: chat.of_kind(SYSTEM), what="the notice")
    (notice,) = [m.text for m in chat.of_kind(SYSTEM)]
    assert "does not accept files of type application/zip" in notice
    assert wa.phone.sent == []
