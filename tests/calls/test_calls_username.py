"""WhatsApp callers without a phone number (issue 17), end to end: Meta's Asterisk -> TLS/SDES/
Opus -> our Asterisk -> Stasis -> thoth-pbx -> Bitrix24 simulator, operators' phones for real.

A caller with a WhatsApp username may reach us with their business-scoped user id (BSUID) as
the From user and x-wa-meta-user-id / -user-name / -user-country-code headers (Meta:
developers.facebook.com/docs/whatsapp/business-scoped-user-ids, "SIP invites for
user-initiated calls"). telephony.externalCall.register requires PHONE_NUMBER and documents
no format (api-reference/telephony/telephony-external-call-register.md): such a call goes
with the configured placeholder, never CRM_CREATE, bound to the customer's CRM entity
(docs/calls.md "Callers without a phone number").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.calls.conftest import (
    BUSINESS,
    start_own_lab,
)
from tests.calls.lab import CallLab, stop_lab
from tests.calls.service import Thoth, start_thoth, stop_thoth
from tests.support.bitrix import wait_until
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.customers import Customer

REGISTER, SHOW, FINISH, SEARCH, CONTACT_ADD = (
    "telephony.externalcall.register",
    "telephony.externalcall.show",
    "telephony.externalcall.finish",
    "telephony.externalcall.searchcrmentities",
    "crm.contact.add",
)
PLACEHOLDER = "0000000000"


@pytest.fixture(scope="module")
def lab() -> Iterator[CallLab]:
    """A lab of our own (instance names of its own): other call tests may run at the same time."""
    lab = start_own_lab("calls-username")
    yield lab
    stop_lab(lab)


@pytest.fixture
async def thoth(tmp_path: Path, lab: CallLab) -> AsyncIterator[Thoth]:
    t = await start_thoth(tmp_path, lab, record=False)
    await t.set_calls(ring_group=["101"], responsible_first_seconds=8, group_ring_seconds=10)
    yield t
    await stop_thoth(t)


def _headers(bsuid: str | None, username: str | None = None, country: str | None = None) -> dict[str, str]:
    named = {
        "X-WA-Meta-User-Id": bsuid,
        "X-WA-Meta-User-Name": username,
        "X-WA-Meta-User-Country-Code": country,
    }
    return {k: v for k, v in named.items() if v is not None}


async def _customer(thoth: Thoth, customer_id: int | None) -> Customer:
    assert customer_id is not None
    async with thoth.services.sessions() as session:
        row = await session.get(Customer, customer_id)
    assert row is not None
    return row


async def _talk_and_hang_up(
    thoth: Thoth, lab: CallLab, caller: str, placed: dict[str, Any], operator: tuple[str, int] = ("101", 2)
) -> Call:
    """The call reaches an operator, the caller hangs up; the ended row once Bitrix24 has the finish."""
    call = await thoth.wait_call(caller, "connected")
    assert (call.answered_by_extension, call.answered_by_user_id) == operator
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    await wait_until(
        lambda: any(m == FINISH for m, _ in thoth.bitrix_calls(ended.linkedid)), what="the finish in Bitrix24"
    )
    return ended


def _registers(thoth: Thoth, linkedid: str) -> list[dict[str, Any]]:
    return [e.params for e in thoth.sim.recorder.calls(REGISTER) if e.params.get("EXTERNAL_CALL_ID") == linkedid]


async def test_username_only_caller_is_answered_and_logged_once_without_a_phone_search(
    thoth: Thoth, lab: CallLab
) -> None:
    bsuid = "US.13491208655302741918"
    placed = lab.whatsapp_call(BUSINESS, bsuid, headers=_headers(bsuid, "jane.doe", "US"))
    ended = await _talk_and_hang_up(thoth, lab, bsuid, placed)
    assert ended.status_code == "200" and ended.wacid == placed["wacid"]
    customer = await _customer(thoth, ended.customer_id)
    assert (customer.bsuid, customer.phone, customer.username) == (bsuid, None, "jane.doe")
    # Bitrix24: one contact named after the username, one register bound to it, by no number
    [contact] = thoth.sim.recorder.calls(CONTACT_ADD, ok=True)
    assert contact.params["fields"]["NAME"] == "@jane.doe"
    assert bsuid in contact.params["fields"]["COMMENTS"]
    [register] = _registers(thoth, ended.linkedid)
    assert register["PHONE_NUMBER"] == PLACEHOLDER and register["CRM_CREATE"] == 0
    assert (register["CRM_ENTITY_TYPE"], register["CRM_ENTITY_ID"]) == ("CONTACT", contact.result)
    assert [m for m, _ in thoth.bitrix_calls(ended.linkedid)] == [REGISTER, SHOW, FINISH]
    assert thoth.sim.recorder.calls(SEARCH) == []  # no phone search, not even with the placeholder
    # no request carried the BSUID's digits as a phone number
    for entry in thoth.sim.recorder.entries:
        assert "13491208655302741918" not in str(entry.params.get("PHONE_NUMBER", "")), entry.method
    statistic = thoth.portal.statistics[str(ended.bitrix_call_id)]
    assert statistic["CRM_ENTITY_ID"] == contact.result and statistic["CALL_FAILED_CODE"] == "200"
    # the customer now knows its CRM entity (for the next call)
    assert (customer.crm_entity_type, customer.crm_entity_id) == ("CONTACT", contact.result)
    # the admin sees who called: the call names its customer, the customer their username
    from thoth_pbx.clients.asterisk.ari import basic_auth_header

    admin = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    shown = await (await thoth.client.get(f"/api/admin/calls/{ended.id}", headers=admin)).json()
    assert (shown["caller"], shown["customer_id"]) == (bsuid, customer.id)
    who = await (await thoth.client.get(f"/api/admin/customers/{customer.id}", headers=admin)).json()
    assert (who["username"], who["bsuid"], who["crm"]) == (
        "jane.doe",
        bsuid,
        {"entity_type": "CONTACT", "entity_id": contact.result},
    )


async def test_a_second_call_from_the_same_bsuid_finds_the_entity_the_first_one_created(
    thoth: Thoth, lab: CallLab
) -> None:
    bsuid = "DE.8812000344"
    first = lab.whatsapp_call(BUSINESS, bsuid, headers=_headers(bsuid, "hans_b", "DE"))
    one = await _talk_and_hang_up(thoth, lab, bsuid, first)
    [contact] = thoth.sim.recorder.calls(CONTACT_ADD, ok=True)
    assert thoth.sim.recorder.calls("crm.contact.get") == []  # its owner is the register's user: not asked
    thoth.portal.contacts[contact.result]["ASSIGNED_BY_ID"] = 6  # a manager takes the customer (ext 105)
    # the second time Meta sends no headers at all: the From user is the BSUID
    second = lab.whatsapp_call(BUSINESS, bsuid)
    two = await _talk_and_hang_up(thoth, lab, bsuid, second, operator=("105", 6))  # the owner, rung first
    assert two.linkedid != one.linkedid and two.customer_id == one.customer_id
    [register] = _registers(thoth, two.linkedid)
    assert (register["CRM_ENTITY_TYPE"], register["CRM_ENTITY_ID"], register["CRM_CREATE"]) == (
        "CONTACT",
        contact.result,
        0,
    )
    assert thoth.sim.recorder.count(CONTACT_ADD) == 1 and thoth.sim.recorder.calls(SEARCH) == []
    assert [e.params for e in thoth.sim.recorder.calls("crm.contact.get")] == [{"id": contact.result}]
    assert thoth.portal.statistics[str(two.bitrix_call_id)]["CRM_ENTITY_ID"] == contact.result


async def test_with_a_phone_number_the_call_is_logged_by_phone_as_before(thoth: Thoth, lab: CallLab) -> None:
    caller, bsuid = "+79990001701", "RU.55501701"
    thoth.portal.crm[caller.lstrip("+")] = [
        {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 91, "NAME": "Known", "ASSIGNED_BY_ID": 6}
    ]
    placed = lab.whatsapp_call(BUSINESS, caller, headers=_headers(bsuid, "known.one", "RU"))
    call = await thoth.wait_call(caller, "connected")
    assert call.answered_by_extension == "105"  # the CRM owner found by number, rung first
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    [register] = _registers(thoth, ended.linkedid)
    assert register["PHONE_NUMBER"] == caller and register["CRM_CREATE"] == 1 and "CRM_ENTITY_ID" not in register
    assert [e.params["PHONE_NUMBER"] for e in thoth.sim.recorder.calls(SEARCH)] == [caller]
    assert thoth.sim.recorder.calls(CONTACT_ADD) == []
    customer = await _customer(thoth, ended.customer_id)
    assert (customer.phone, customer.bsuid, customer.username) == (caller.lstrip("+"), bsuid, "known.one")
    await wait_until(
        lambda: _customer_crm(thoth, ended.customer_id, ("CONTACT", 91)), what="the number's CRM entity linked"
    )


async def _customer_crm(thoth: Thoth, customer_id: int | None, want: tuple[str, int]) -> bool:
    customer = await _customer(thoth, customer_id)
    return (customer.crm_entity_type, customer.crm_entity_id) == want


HOSTILE = {
    # a comma would split the Stasis arguments (and shift a fake BSUID into the username's place)
    "X-WA-Meta-User-Id": "US.1,US.666",
    "X-WA-Meta-User-Name": "\"),Hangup(),${SHELL(id)}' OR 1=1;--",
    "X-WA-Meta-User-Country-Code": "US;DROP",
}


async def test_hostile_header_values_are_rejected_and_the_caller_is_still_served(thoth: Thoth, lab: CallLab) -> None:
    bsuid = "FR.424242"
    placed = lab.whatsapp_call(BUSINESS, bsuid, headers=HOSTILE)
    ended = await _talk_and_hang_up(thoth, lab, bsuid, placed)
    assert ended.status_code == "200" and ended.wacid == placed["wacid"]  # arguments not shifted
    customer = await _customer(thoth, ended.customer_id)
    assert (customer.bsuid, customer.username, customer.phone) == (bsuid, None, None)
    async with thoth.services.sessions() as session:
        names = (await session.scalars(select(Customer.bsuid))).all()
    assert "US.666" not in names and "US.1" not in names
    [contact] = thoth.sim.recorder.calls(CONTACT_ADD, ok=True)
    assert contact.params["fields"]["NAME"] == "WhatsApp"
    seen = str([e.params for e in thoth.sim.recorder.entries])
    for value in HOSTILE.values():
        assert value not in seen
    assert "SHELL" not in seen and "DROP" not in seen
