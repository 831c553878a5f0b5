"""The simulated portal's `imopenlines.dialog.get` and the CRM binding of a new Open Lines chat.

Pages (b24restdocs, api-reference/...; published under apidocs.bitrix24.com/api-reference/...html):
imopenlines/openlines/sessions/imopenlines-dialog-get (the keys, DIALOG_ID_EMPTY, ACCESS_ERROR),
imopenlines/openlines/sessions/imopenlines-session-history-get (entity_data_1: the session id is
its sixth value, "Y|LEAD|1205|N|N|321|..."), imopenlines/openlines/imopenlines-config-add (CRM,
CRM_CREATE: what a new client gets, `lead` by default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.bitrix import USERS
from thoth_pbx.sandbox.bitrix import BitrixSimulator

CONNECTOR = "thoth_whatsapp"
KEYS = {
    "avatar",
    "color",
    "date_create",
    "dialog_id",
    "entity_data_1",
    "entity_data_2",
    "entity_data_3",
    "entity_id",
    "entity_type",
    "extranet",
    "id",
    "manager_list",
    "message_type",
    "name",
    "owner",
    "type",
}


class Portal:
    def __init__(self, sim: BitrixSimulator, http: httpx.AsyncClient, token: str) -> None:
        self.sim, self.http, self.token = sim, http, token

    async def rest(self, method: str, **params: Any) -> tuple[int, Any]:
        resp = await self.http.post(method, json={**params, "auth": self.token})
        return resp.status_code, resp.json()

    async def line(self, **settings: str) -> int:
        status, body = await self.rest("imopenlines.config.add", PARAMS={"LINE_NAME": "WA", **settings})
        assert status == 200, body
        line = int(body["result"])
        status, body = await self.rest("imconnector.activate", CONNECTOR=CONNECTOR, LINE=line, ACTIVE=1)
        assert body["result"] is True
        return line

    async def first_message(self, line: int, user: dict[str, Any]) -> dict[str, Any]:
        """A customer's first message; the chat's session block of the answer."""
        item = {"user": user, "message": {"id": "wamid.1", "text": "hi"}, "chat": {"id": user["id"]}}
        status, body = await self.rest("imconnector.send.messages", CONNECTOR=CONNECTOR, LINE=line, MESSAGES=[item])
        assert status == 200, body
        session: dict[str, Any] = body["result"]["DATA"]["RESULT"][0]["session"]
        return session


@pytest.fixture
async def portal() -> AsyncIterator[Portal]:
    sim = BitrixSimulator()
    await sim.start()
    p = sim.add_portal(users=USERS)
    p.installed = True
    p.application_token = "app-token-dialog"
    token = sim.issue_tokens(p)["access_token"]
    async with httpx.AsyncClient(base_url=p.client_endpoint) as http:
        yield Portal(sim, http, token)
    await sim.stop()


async def test_a_new_chat_is_bound_to_a_new_lead_and_dialog_get_says_so(portal: Portal) -> None:
    """imopenlines-dialog-get.md: any one of CHAT_ID, DIALOG_ID, SESSION_ID, USER_CODE names the
    chat; the keys of the page's example; entity_data_1 "Y|LEAD|<id>|N|N|<session>|...";
    a lead, the line's default CRM_CREATE, is findable by the customer's number afterwards."""
    line = await portal.line()
    session = await portal.first_message(line, {"id": "15550001", "name": "Anna", "phone": "+15550001"})
    chat_id, session_id = int(session["CHAT_ID"]), int(session["ID"])
    answers = []
    for params in (
        {"CHAT_ID": chat_id},
        {"DIALOG_ID": f"chat{chat_id}"},
        {"SESSION_ID": session_id},
        {"USER_CODE": f"{CONNECTOR}|{line}|15550001|0"},
    ):
        status, body = await portal.rest("imopenlines.dialog.get", **params)
        assert status == 200, body
        answers.append(body["result"])
    assert all(a == answers[0] for a in answers)
    dialog = answers[0]
    assert set(dialog) == KEYS and dialog["id"] == chat_id and dialog["entity_type"] == "LINES"
    assert dialog["type"] == "lines" and dialog["message_type"] == "L"
    assert dialog["entity_id"].startswith(f"{CONNECTOR}|{line}|15550001|")
    data_1 = dialog["entity_data_1"].split("|")
    assert data_1[:2] == ["Y", "LEAD"] and int(data_1[2]) > 0 and data_1[5] == str(session_id)
    lead = int(data_1[2])
    assert dialog["entity_data_2"] == f"LEAD|{lead}|COMPANY|0|CONTACT|0|DEAL|0"
    status, body = await portal.rest("telephony.externalCall.searchCrmEntities", PHONE_NUMBER="+15550001")
    assert [(e["CRM_ENTITY_TYPE"], e["CRM_ENTITY_ID"]) for e in body["result"]] == [("LEAD", lead)]
    status, body = await portal.rest("crm.lead.get", id=lead)  # crm-lead-get.md
    assert status == 200 and body["result"]["ID"] == str(lead) and int(body["result"]["ASSIGNED_BY_ID"]) > 0
    status, body = await portal.rest("crm.lead.get", id=lead + 1)
    assert (status, body["error_description"]) == (400, "Not found")


async def test_the_line_settings_decide_the_binding(portal: Portal) -> None:
    """imopenlines-config-add.md: CRM=N binds nothing ("N|NONE|0|..."); CRM_CREATE=deal gives a
    contact and its deal (the chat's own entity is the deal); a customer whose number CRM knows
    is bound to that entity, nothing created."""
    plain = await portal.line(CRM="N")
    session = await portal.first_message(plain, {"id": "15550002", "name": "Ben"})
    _, body = await portal.rest("imopenlines.dialog.get", CHAT_ID=session["CHAT_ID"])
    assert body["result"]["entity_data_1"].startswith("N|NONE|0|N|N|")
    assert body["result"]["entity_data_2"] == "LEAD|0|COMPANY|0|CONTACT|0|DEAL|0"

    deals = await portal.line(CRM_CREATE="deal")
    session = await portal.first_message(deals, {"id": "US.77", "name": "Cleo"})
    _, body = await portal.rest("imopenlines.dialog.get", CHAT_ID=session["CHAT_ID"])
    data_1, data_2 = body["result"]["entity_data_1"].split("|"), body["result"]["entity_data_2"].split("|")
    assert data_1[:2] == ["Y", "DEAL"] and data_2[0::2] == ["LEAD", "COMPANY", "CONTACT", "DEAL"]
    assert data_2[1] == "0" and int(data_2[5]) > 0 and data_2[7] == data_1[2]

    _, contact = await portal.rest("crm.contact.add", fields={"NAME": "Dora", "PHONE": [{"VALUE": "+15550003"}]})
    known = await portal.line()
    session = await portal.first_message(known, {"id": "15550003", "name": "Dora", "phone": "+15550003"})
    _, body = await portal.rest("imopenlines.dialog.get", CHAT_ID=session["CHAT_ID"])
    assert body["result"]["entity_data_1"].startswith(f"Y|CONTACT|{contact['result']}|")


async def test_dialog_get_errors_as_the_page_lists_them(portal: Portal) -> None:
    """imopenlines-dialog-get.md "Possible Error Codes": DIALOG_ID_EMPTY with no parameter,
    ACCESS_ERROR for a chat the caller cannot see (here: one that does not exist)."""
    status, body = await portal.rest("imopenlines.dialog.get")
    assert (status, body["error"], body["error_description"]) == (400, "DIALOG_ID_EMPTY", "Dialog ID can't be empty")
    status, body = await portal.rest("imopenlines.dialog.get", CHAT_ID=99999)
    assert (status, body["error"]) == (400, "ACCESS_ERROR")
