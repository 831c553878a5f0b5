"""Queued imconnector.send.messages calls of one line share commands (MESSAGES[]) and each caller
gets its own part of the answer; the strict simulator over loopback HTTP (no database)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.test_bitrix_client import make_client
from tests.support.bitrix import USERS
from thoth_pbx.clients.bitrix.errors import BitrixLogicError
from thoth_pbx.clients.bitrix.merging import SEND_MESSAGES, split_data_result
from thoth_pbx.clients.bitrix.rest import BitrixClient
from thoth_pbx.clients.bitrix.transport import PortalHttp
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal

CONNECTOR = "thoth_whatsapp"
SEND = "imconnector.send.messages"


async def portal_with_lines(
    sim: BitrixSimulator, http: PortalHttp, count: int
) -> tuple[Portal, BitrixClient, list[int]]:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http)
    lines = []
    for i in range(count):
        line = int(await client.call("imopenlines.config.add", {"PARAMS": {"LINE_NAME": f"WA{i}"}}))
        assert await client.call("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": line, "ACTIVE": 1}) is True
        lines.append(line)
    sim.recorder.clear()
    return portal, client, lines


def entry(chat: str, message_id: str, *, user: Any = None) -> dict[str, Any]:
    return {
        "user": {"id": chat, "name": "Customer"} if user is None else user,
        "message": {"id": message_id, "text": f"text of {message_id}"},
        "chat": {"id": chat},
    }


async def send(client: BitrixClient, line: int, item: dict[str, Any]) -> Any:
    return await client.call(SEND, {"CONNECTOR": CONNECTOR, "LINE": line, "MESSAGES": [item]}, merge=SEND_MESSAGES)


async def test_queued_messages_of_one_line_share_commands_and_each_caller_gets_its_own_answer(
    sim: BitrixSimulator, http: PortalHttp
) -> None:
    """The first call leaves at once, alone; the 45 queued while it is out go as one batch of
    three commands (at most 20 messages each), in queue order, each chat's message once."""
    portal, client, (line,) = await portal_with_lines(sim, http, 1)
    before = client.stats.commands
    answers = await asyncio.gather(*(send(client, line, entry(f"chat{i}", f"wamid.{i}")) for i in range(46)))
    commands = sim.recorder.calls(SEND, ok=True)
    assert [len(c.params["MESSAGES"]) for c in commands] == [1, 20, 20, 5]
    assert commands[0].batch is None and len({c.batch for c in commands[1:]}) == 1
    sent = [m["message"]["id"] for c in commands for m in c.params["MESSAGES"]]
    assert sent == [f"wamid.{i}" for i in range(46)]
    for i, answer in enumerate(answers):
        assert answer["SUCCESS"] is True
        (mine,) = answer["DATA"]["RESULT"]
        assert mine["chat"]["id"] == f"chat{i}" and mine["message"]["id"] == f"wamid.{i}"
        chat = portal.chat(CONNECTOR, line, f"chat{i}")
        assert chat is not None and [m.external_id for m in chat.messages] == [f"wamid.{i}"]
        assert mine["session"]["CHAT_ID"] == str(chat.chat_id)
    assert [r.path for r in sim.recorder.requests] == [f"/rest/{SEND}", "/rest/batch"]
    assert client.stats.merged == 42 and client.stats.commands - before == 46  # calls answered
    await client.aclose()


async def test_messages_of_different_lines_are_never_merged(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal, client, lines = await portal_with_lines(sim, http, 2)
    await asyncio.gather(*(send(client, lines[i % 2], entry(f"chat{i}", f"wamid.{i}")) for i in range(11)))
    commands = sim.recorder.calls(SEND, ok=True)
    by_line = {(int(c.params["LINE"]), len(c.params["MESSAGES"])) for c in commands[1:]}
    assert by_line == {(lines[0], 5), (lines[1], 5)}
    for i in range(11):
        chat = portal.chat(CONNECTOR, lines[i % 2], f"chat{i}")
        assert chat is not None and [m.external_id for m in chat.messages] == [f"wamid.{i}"]
    await client.aclose()


async def test_an_item_the_portal_refuses_fails_only_its_own_call(sim: BitrixSimulator, http: PortalHttp) -> None:
    """imconnector-send-messages.md answers per item: the one without a user id is refused in
    DATA.RESULT, the others of the same command arrive."""
    portal, client, (line,) = await portal_with_lines(sim, http, 1)
    items = [entry(f"chat{i}", f"wamid.{i}") for i in range(6)]
    items[3] = entry("chat3", "wamid.3", user={"id": "", "name": "Nobody"})
    answers = await asyncio.gather(*(send(client, line, item) for item in items))
    assert [a["SUCCESS"] for a in answers] == [True, True, True, False, True, True]
    assert answers[3]["DATA"]["RESULT"][0]["ERRORS"]
    assert len(sim.recorder.calls(SEND, ok=True)) == 2  # the first alone, the other five merged
    assert portal.chat(CONNECTOR, line, "chat3") is None
    assert all(portal.chat(CONNECTOR, line, f"chat{i}") is not None for i in (0, 1, 2, 4, 5))
    await client.aclose()


async def test_a_merged_command_refused_as_a_whole_is_sent_again_call_by_call(
    sim: BitrixSimulator, http: PortalHttp
) -> None:
    """A malformed item makes the portal refuse the whole command (ERROR_ARGUMENT): its
    companions must not share its fate. Each is sent again on its own; only the bad one fails."""
    portal, client, (line,) = await portal_with_lines(sim, http, 1)
    items = [entry(f"chat{i}", f"wamid.{i}") for i in range(5)]
    items[2] = entry("chat2", "wamid.2", user="not a block")
    outcomes = await asyncio.gather(*(send(client, line, item) for item in items), return_exceptions=True)
    assert isinstance(outcomes[2], BitrixLogicError)
    assert [o["SUCCESS"] for i, o in enumerate(outcomes) if i != 2] == [True, True, True, True]
    refused = sim.recorder.calls(SEND, ok=False)
    assert [len(c.params["MESSAGES"]) for c in refused] == [4, 1]  # the merged four, then the bad one alone
    for i in (0, 1, 3, 4):
        chat = portal.chat(CONNECTOR, line, f"chat{i}")
        assert chat is not None and [m.external_id for m in chat.messages] == [f"wamid.{i}"]
    await client.aclose()


def test_an_answer_that_does_not_match_the_items_is_not_split() -> None:
    answer = {"SUCCESS": True, "DATA": {"RESULT": [{"SUCCESS": True}, {"SUCCESS": True}]}}
    assert split_data_result(answer, [1, 1, 1]) is None
    assert split_data_result({"SUCCESS": True}, [1]) is None
    assert split_data_result([], [1]) is None
    parts = split_data_result(
        {"SUCCESS": False, "DATA": {"RESULT": [{"SUCCESS": True}, {"SUCCESS": False}, {"SUCCESS": True}]}}, [2, 1]
    )
    assert parts == [
        {"SUCCESS": False, "DATA": {"RESULT": [{"SUCCESS": True}, {"SUCCESS": False}]}},
        {"SUCCESS": True, "DATA": {"RESULT": [{"SUCCESS": True}]}},
    ]
