"""A customer who wrote on WhatsApp before they call (issue 17): the CRM entity Bitrix24's Open
Lines bound their chat to is their CRM link, so their first call, by BSUID with no number to
search by, is bound to it and rings its owner first. Real Asterisk (TLS/SDES/Opus), Stasis,
the Bitrix24 simulator.

The chat is made on the simulated portal as our connector makes it (imconnector.send.messages:
the line's default CRM_CREATE `lead` binds it to a new lead); the link job
(`bitrix.messaging.crm_link`, imopenlines.dialog.get) runs for it as the inbound job's commit
would enqueue it (that step: tests/integration/test_messaging_crm_link.py). Docs:
apidocs.bitrix24.com/api-reference/imopenlines/openlines/sessions/imopenlines-dialog-get.html,
api-reference/telephony/telephony-external-call-register.md (CRM_ENTITY_TYPE/ID)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.calls.conftest import BUSINESS, BUSINESS_PASSWORD, start_own_lab
from tests.calls.lab import CallLab, stop_lab
from tests.calls.service import Thoth, start_thoth, stop_thoth
from tests.support.bitrix import wait_until
from thoth_pbx.features.customers import Customer, identify
from thoth_pbx.features.directory import Phone
from thoth_pbx.features.messaging.crm_link import KIND_CRM_LINK, crm_chain

REGISTER, FINISH = "telephony.externalcall.register", "telephony.externalcall.finish"
CONNECTOR = "thoth_whatsapp"


@pytest.fixture(scope="module")
def lab() -> Iterator[CallLab]:
    """A lab of our own (instance names of its own): other call tests may run at the same time."""
    lab = start_own_lab("calls-chat-crm", [(BUSINESS, BUSINESS_PASSWORD, None)])
    yield lab
    stop_lab(lab)


@pytest.fixture
async def thoth(tmp_path: Path, lab: CallLab) -> AsyncIterator[Thoth]:
    t = await start_thoth(tmp_path, lab, record=False)
    await t.set_calls(ring_group=["101"], responsible_first_seconds=8, group_ring_seconds=10)
    yield t
    await stop_thoth(t)


async def _chat_on_the_portal(thoth: Thoth, bsuid: str) -> str:
    """The customer's first message in an Open Lines chat of our connector; its im chat id."""
    assert thoth.services.bitrix is not None
    client = await thoth.services.bitrix.portals.client(thoth.instance_id)
    line = await client.call("imopenlines.config.add", {"PARAMS": {"LINE_NAME": "THOTH_14155550123"}})
    await client.call("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": line, "ACTIVE": 1})
    item = {
        "user": {"id": bsuid, "name": "Hans"},
        "message": {"id": "wamid.h1", "text": "hallo"},
        "chat": {"id": bsuid},
    }
    answer = await client.call("imconnector.send.messages", {"CONNECTOR": CONNECTOR, "LINE": line, "MESSAGES": [item]})
    return str(answer["DATA"]["RESULT"][0]["session"]["CHAT_ID"])


async def _linked(thoth: Thoth, customer_id: int) -> tuple[str | None, int | None] | None:
    async with thoth.services.sessions() as session:
        row = await session.get(Customer, customer_id)
    assert row is not None
    return (row.crm_entity_type, row.crm_entity_id) if row.crm_entity_id is not None else None


async def test_a_first_call_after_a_chat_is_bound_to_the_chats_lead(thoth: Thoth, lab: CallLab) -> None:
    bsuid = "DE.4471000555"
    chat_id = await _chat_on_the_portal(thoth, bsuid)
    (chat,) = thoth.portal.chats.values()
    lead = chat.crm["LEAD"]
    thoth.portal.leads[lead]["ASSIGNED_BY_ID"] = 6  # a manager owns the lead (ext 105)
    async with thoth.services.sessions() as session, session.begin():
        phone = await session.scalar(select(Phone).where(Phone.number == BUSINESS))
        assert phone is not None
        customer = await identify(session, phone.waba_account_id, bsuid=bsuid, phone=None, name="Hans")
        await session.flush()
        customer_id = customer.id
        await thoth.services.outbox.enqueue(
            session,
            KIND_CRM_LINK,
            thoth.instance_id,
            crm_chain(thoth.instance_id, chat_id),
            {"customer_id": customer_id, "chat_id": chat_id},
        )
    assert await wait_until(lambda: _linked(thoth, customer_id), what="the CRM link") == ("LEAD", lead)

    placed = lab.whatsapp_call(BUSINESS, bsuid)  # no headers: the From user is the BSUID
    call = await thoth.wait_call(bsuid, "connected")
    assert (call.answered_by_extension, call.answered_by_user_id) == ("105", 6)  # the lead's owner first
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(bsuid, "ended")
    await wait_until(
        lambda: any(m == FINISH for m, _ in thoth.bitrix_calls(ended.linkedid)), what="the finish in Bitrix24"
    )
    assert ended.customer_id == customer_id
    registers: list[dict[str, Any]] = [
        e.params for e in thoth.sim.recorder.calls(REGISTER) if e.params.get("EXTERNAL_CALL_ID") == ended.linkedid
    ]
    [register] = registers
    assert (register["CRM_ENTITY_TYPE"], register["CRM_ENTITY_ID"], register["CRM_CREATE"]) == ("LEAD", lead, 0)
    assert thoth.sim.recorder.count("crm.contact.add") == 0  # the chat's lead, no new contact
    assert [e.params for e in thoth.sim.recorder.calls("crm.lead.get")] == [{"id": lead}]
    assert thoth.portal.statistics[str(ended.bitrix_call_id)]["CRM_ENTITY_ID"] == lead
