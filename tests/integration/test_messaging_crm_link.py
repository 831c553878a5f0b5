"""A customer who first writes on WhatsApp gets the CRM entity Bitrix24's Open Lines bound their
chat to as their CRM link (issue 17: "a CRM entity already linked to this BSUID through an
earlier chat or call"), so their first call lands on it; an existing link is kept.

Bitrix24: apidocs.bitrix24.com/api-reference/imopenlines/openlines/sessions/imopenlines-dialog-get.html
(entity_data_1 "Y|LEAD|1205|N|N|321|...", as imopenlines-session-history-get.html reads it),
imopenlines/openlines/imopenlines-config-add.html (the line's CRM settings: CRM_CREATE `lead` by
default). Both simulators, the real service and database; docs/messaging.md "CRM link"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import jobs, wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.features.customers import identify
from thoth_pbx.features.messaging.crm_link import KIND_CRM_LINK, crm_chain
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix import OpenLinesChat

BSUID = "US.13491208655302741918"
DIALOG_GET = "imopenlines.dialog.get"


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        yield b


def _from(text: str, wamid: str, *, phone: str | None, bsuid: str = BSUID) -> dict[str, Any]:
    """A customer's message with the BSUID in contacts[].user_id, the phone only when shared."""
    change = meta_sim.message_change(SEED.phone_number_id, SEED.display_phone_number, phone or "0", text, wamid=wamid)
    value = change["value"]
    value["contacts"][0]["user_id"] = bsuid
    value["messages"][0]["from_user_id"] = bsuid
    if phone is None:
        del value["contacts"][0]["wa_id"], value["messages"][0]["from"]
    return meta_sim.delivery(SEED.waba_id, [change])


def _chat(wa: Bridge, key: str) -> OpenLinesChat:
    (chat,) = [c for c in wa.env.portal.chats.values() if c.external_id == key]
    return chat


async def _customer(wa: Bridge, q: str) -> dict[str, Any]:
    (found,) = (await wa.admin_get(f"/api/admin/customers?q={q}"))["items"]
    detail: dict[str, Any] = await wa.admin_get(f"/api/admin/customers/{found['id']}")
    return detail


async def test_a_username_only_customers_first_message_links_them_to_the_chats_lead(wa: Bridge) -> None:
    await wa.post(_from("hello, no number here", "wamid.c1", phone=None))
    await wa.quiet()
    chat = _chat(wa, BSUID)
    assert list(chat.crm) == ["LEAD"]  # the line's default CRM_CREATE made a lead for the new chat
    customer = await _customer(wa, BSUID)
    assert customer["crm"] == {"entity_type": "LEAD", "entity_id": chat.crm["LEAD"]}
    (asked,) = wa.env.sim.recorder.calls(DIALOG_GET, ok=True)
    assert int(asked.params["CHAT_ID"]) == chat.chat_id
    await wa.post(_from("one more thing", "wamid.c2", phone=None))
    await wa.quiet()
    assert wa.env.sim.recorder.count(DIALOG_GET) == 1  # once per chat, not per message


async def test_a_customer_crm_knows_by_number_is_linked_to_that_contact(wa: Bridge) -> None:
    owner = min(wa.env.portal.users)
    wa.env.portal.crm[CUSTOMER] = [
        {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 777, "NAME": "Known", "ASSIGNED_BY_ID": owner}
    ]
    await wa.post(_from("order 77?", "wamid.k1", phone=CUSTOMER))
    await wa.quiet()
    assert _chat(wa, CUSTOMER).crm == {"CONTACT": 777}
    assert (await _customer(wa, CUSTOMER))["crm"] == {"entity_type": "CONTACT", "entity_id": 777}


async def test_a_chat_bound_to_a_deal_links_the_deals_contact(wa: Bridge) -> None:
    """A call binds only CONTACT, COMPANY or LEAD: with CRM_CREATE=deal the chat's own entity
    (entity_data_1) is the deal, so the contact comes from entity_data_2."""
    wa.env.portal.open_lines[wa.line_id]["CRM_CREATE"] = "deal"
    await wa.post(_from("quote please", "wamid.d1", phone=None))
    await wa.quiet()
    chat = _chat(wa, BSUID)
    assert set(chat.crm) == {"DEAL", "CONTACT"}
    assert (await _customer(wa, BSUID))["crm"] == {"entity_type": "CONTACT", "entity_id": chat.crm["CONTACT"]}


async def test_an_existing_link_is_kept(wa: Bridge) -> None:
    """A customer already linked (an earlier call) is not asked about, and a question already on
    its way when the link appeared does not overwrite it."""
    phone = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}")
    instance_id = int(phone["app_instance_id"])
    async with wa.env.sessions() as session, session.begin():
        known = await identify(session, int(phone["waba_account_id"]), bsuid=BSUID, phone=None)
        known.crm_entity_type, known.crm_entity_id = "CONTACT", 4242
    await wa.post(_from("it's me again", "wamid.e1", phone=None))
    await wa.quiet()
    chat = _chat(wa, BSUID)
    assert chat.crm and "CONTACT" not in chat.crm  # the chat got a lead of its own ...
    assert wa.env.sim.recorder.count(DIALOG_GET) == 0  # ... and nobody asked
    async with wa.env.sessions() as session, session.begin():
        await wa.env.services.outbox.enqueue(
            session,
            KIND_CRM_LINK,
            instance_id,
            crm_chain(instance_id, str(chat.chat_id)),
            {"customer_id": known.id, "chat_id": str(chat.chat_id)},
        )
    await wa.quiet()
    assert wa.env.sim.recorder.count(DIALOG_GET, ok=True) == 1
    assert (await _customer(wa, BSUID))["crm"] == {"entity_type": "CONTACT", "entity_id": 4242}


async def test_a_chat_bound_to_nothing_is_asked_again_later(wa: Bridge) -> None:
    """A line with CRM off binds nothing ("N|NONE|0|..."): the job waits and asks again (the
    binding may come a moment after the first message), the customer stays unlinked."""
    wa.env.portal.open_lines[wa.line_id]["CRM"] = "N"
    await wa.post(_from("just browsing", "wamid.n1", phone=None))

    async def waiting() -> list[OutboxJob]:
        return [j for j in await jobs(wa.env.sessions, kind=KIND_CRM_LINK) if j.status == "pending" and j.attempts]

    (job,) = await wait_until(waiting, what="the CRM link job waiting")
    assert "not bound to CRM yet" in (job.last_error or "") and job.attempts == 1
    assert wa.env.sim.recorder.count(DIALOG_GET, ok=True) == 1
    assert (await _customer(wa, BSUID))["crm"] is None
