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
