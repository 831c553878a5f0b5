"""pywa, an independent WhatsApp client, against the Meta simulator, changed only in its base
URL (pywa sets `https://graph.facebook.com/v{version}` on its httpx session; we point that one
attribute at the simulator). What pywa sends is what Meta's docs show, so every disagreement
here is a gap in the simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
from pywa import WhatsApp
from pywa.types import Button, Contact
from pywa.types.calls import CallPermissions, SessionDescription

from thoth_pbx.sandbox import meta as sim

SEED = sim.Seed()
T = TypeVar("T")


@pytest.fixture
async def pywa_and_sim(aiohttp_server):  # type: ignore[no-untyped-def]
    simulator = sim.seeded(SEED)
    server = await aiohttp_server(simulator.app())
    wa = WhatsApp(
        phone_id=SEED.phone_number_id,
        token=SEED.token,
        api_version="25.0",
        waba_id=SEED.waba_id,
        session=httpx.Client(timeout=10),
    )
    wa.api._session.base_url = str(server.make_url("/v25.0"))  # the only change
    yield wa, simulator
    wa.api._session.close()


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_pywa_sends_text_marks_read_and_types(pywa_and_sim) -> None:  # type: ignore[no-untyped-def]
    wa, simulator = pywa_and_sim
    sent = await _run(wa.send_message, to="15551234567", text="hello from pywa")
    assert sent.id.startswith("wamid.")
    assert simulator.phones[SEED.phone_number_id].sent[-1]["text"]["body"] == "hello from pywa"
    change = sim.message_change(SEED.phone_number_id, SEED.display_phone_number, "15551234567", "hi", wamid="wamid.P1")
    simulator.announce(sim.delivery(SEED.waba_id, [change]))
    assert (await _run(wa.mark_message_as_read, "wamid.P1")).success
    assert (await _run(wa.indicate_typing, "wamid.P1")).success
    assert [r.get("typing_indicator") for r in simulator.phones[SEED.phone_number_id].read] == [None, {"type": "text"}]


async def test_pywa_reads_the_phone_number_and_the_waba_list(pywa_and_sim) -> None:  # type: ignore[no-untyped-def]
    wa, simulator = pywa_and_sim
    phone = await _run(wa.get_business_phone_number)
    assert phone.id == SEED.phone_number_id and phone.verified_name == "Sandbox Business"
    listed = await _run(wa.get_business_phone_numbers)
    assert [p.id for p in listed] == [SEED.phone_number_id]


async def test_pywa_call_permissions_and_call_actions(pywa_and_sim) -> None:  # type: ignore[no-untyped-def]
    wa, simulator = pywa_and_sim

    # pywa 4.5.0's WhatsApp.get_call_permissions omits an argument of its own GraphAPI method
    # (TypeError before any request), so its GraphAPI call and model are used directly.
    def permissions(user_wa_id: str | None = None, recipient: str | None = None) -> CallPermissions:
        raw = wa.api.get_call_permissions(phone_id=SEED.phone_number_id, user_wa_id=user_wa_id, recipient=recipient)
        return CallPermissions.from_dict(raw)

    assert (await _run(permissions, "15551234567")).permission.status.value.lower() == "no_permission"
    simulator.phones[SEED.phone_number_id].call_permissions["15551234567"] = {
        "status": "temporary",
        "expiration_time": int(time.time()) + 3600,
    }
    assert (await _run(permissions, "15551234567")).permission.status.value.lower() == "temporary"
    simulator.phones[SEED.phone_number_id].call_permissions["US.13491208655302741918"] = {"status": "permanent"}
    # pywa's status enum predates permanent permissions (Nov 2025), so the raw answer is read
    raw = await _run(
        wa.api.get_call_permissions, phone_id=SEED.phone_number_id, user_wa_id=None, recipient="US.13491208655302741918"
    )
    assert raw["permission"] == {"status": "permanent"}
    phone = simulator.phones[SEED.phone_number_id]
    phone.calling["status"] = "ENABLED"
    connect = sim.call_connect_change(SEED.phone_number_id, SEED.display_phone_number, "wacid.PYWA", "15551234567")
    simulator.announce(sim.delivery(SEED.waba_id, [connect]))
    answer = SessionDescription(sdp_type="answer", sdp="v=0\r\n")
    assert (await _run(wa.pre_accept_call, "wacid.PYWA", answer)).success
    assert (await _run(wa.accept_call, "wacid.PYWA", answer)).success
    assert (await _run(wa.terminate_call, "wacid.PYWA")).success
    from pywa.errors import WhatsAppError

    with pytest.raises(WhatsAppError):
        await _run(wa.terminate_call, "wacid.PYWA")


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


async def test_pywa_uploads_sends_downloads_and_deletes_media(pywa_and_sim) -> None:  # type: ignore[no-untyped-def]
    """pywa's media round trip: upload (multipart), send by id, get the URL, download it with its
    own session's Bearer token, delete (developers.facebook.com/documentation/business-messaging/
    whatsapp/business-phone-numbers/media)."""
    wa, simulator = pywa_and_sim
    media = await _run(wa.upload_media, PNG, mime_type="image/png", filename="pic.png")
    assert simulator.media[media.id].mime_type == "image/png"
    sent = await _run(wa.send_image, to="15551234567", image=media, caption="look")
    assert sent.id.startswith("wamid.")
    assert simulator.phones[SEED.phone_number_id].sent[-1]["image"] == {"id": media.id, "caption": "look"}
    url = await _run(wa.get_media_url, media.id)
    assert (url.mime_type, url.file_size) == ("image/png", len(PNG))
    assert await _run(wa.get_media_bytes, url.url) == PNG
    assert simulator.media_downloads[-1] == {"media_id": media.id, "ok": True, "status": 200}
    await _run(
        wa.send_document, to="15551234567", document=b"%PDF-1.4 x", mime_type="application/pdf", filename="a.pdf"
    )
    assert simulator.phones[SEED.phone_number_id].sent[-1]["document"]["filename"] == "a.pdf"
    assert (await _run(wa.delete_media, media.id)).success
    assert media.id not in simulator.media
    from pywa.errors import MediaUploadError

    with pytest.raises(MediaUploadError):  # pywa maps Meta's 131053 to its own class
        await _run(wa.upload_media, b"GIF89a", mime_type="image/gif", filename="a.gif")


async def test_pywa_sends_location_contact_buttons_reaction_and_voice(pywa_and_sim) -> None:  # type: ignore[no-untyped-def]
    """What pywa sends for the other types is what the simulator accepts, and a value Meta refuses
    reaches pywa as Meta's error naming the field
    (developers.facebook.com/docs/whatsapp/cloud-api/reference/messages)."""
    from pywa.errors import WhatsAppError

    wa, simulator = pywa_and_sim
    change = sim.message_change(SEED.phone_number_id, SEED.display_phone_number, "15551234567", "hi", wamid="wamid.P2")
    simulator.announce(sim.delivery(SEED.waba_id, [change]))
    await _run(wa.send_location, to="15551234567", latitude=52.52, longitude=13.405, name="Berlin")
    contact = Contact(name=Contact.Name(formatted_name="Ann Lee", first_name="Ann"), phones=[Contact.Phone("+1 555")])
    await _run(wa.send_contact, to="15551234567", contact=contact, reply_to_message_id="wamid.P2")
    await _run(wa.send_message, to="15551234567", text="Pick", buttons=[Button("Yes", "yes"), Button("No", "no")])
    await _run(wa.send_reaction, to="15551234567", emoji="\U0001f44d", message_id="wamid.P2")
    await _run(wa.send_audio, to="15551234567", audio="https://example.com/v.ogg", is_voice=True)
    types = [m["type"] for m in simulator.phones[SEED.phone_number_id].sent]
    assert types == ["location", "contacts", "interactive", "reaction", "audio"]
    assert simulator.phones[SEED.phone_number_id].sent[1]["context"] == {"message_id": "wamid.P2"}
    with pytest.raises(WhatsAppError) as refused:
        await _run(wa.send_location, to="15551234567", latitude=91.0, longitude=13.405)
    assert refused.value.code == 100 and "location[latitude]" in (refused.value.details or "")
