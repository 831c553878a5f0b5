"""Call permission request (CPR) templates in the Meta simulator, over loopback HTTP: created with
`POST /{waba_id}/message_templates` under Meta's three rules, and sent like any template, where
only one WITH the component is a call permission request (limits, a possible reply). Sources:
developers.facebook.com/documentation/business-messaging/whatsapp/templates/utility-templates/
utility-call-permission-request-templates/ and .../marketing-templates/
call-permission-request-message-template (limitations: MARKETING or UTILITY only, a non-empty
body, no other interactive component); .../calling/user-call-permissions (1 request a day, 2 a
week per user: 138009)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.graph_sim import graph_on_simulator
from thoth_pbx.clients.meta.graph import GraphClient, GraphError, RetryPolicy
from thoth_pbx.sandbox import meta as sim
from thoth_pbx.sandbox.meta.permissions import permission_reply

SEED = sim.Seed()
PNID = SEED.phone_number_id
USER = "79991000001"
FAST = RetryPolicy(attempts=1, base_delay=0.001, max_delay=0.01)
BODY = {"type": "body", "text": "We would like to call you about your order."}
CPR = {"type": "call_permission_request"}


@pytest.fixture
async def graph(aiohttp_server):  # type: ignore[no-untyped-def]
    async with graph_on_simulator(aiohttp_server, SEED, FAST) as client:
        yield client


async def create(graph: GraphClient, name: str, components: list[dict[str, Any]], category: str = "UTILITY") -> Any:
    body = {"name": name, "language": "en_US", "category": category, "components": components}
    return await graph.post(f"{SEED.waba_id}/message_templates", SEED.token, body, attempts=1)


async def refused(graph: GraphClient, name: str, components: list[dict[str, Any]], category: str = "UTILITY") -> str:
    with pytest.raises(GraphError) as info:
        await create(graph, name, components, category)
    assert info.value.code == 100
    return str(info.value.details)


def template_send(name: str) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "template",
        "template": {"name": name, "language": {"code": "en_US"}},
    }


async def send(graph: GraphClient, name: str) -> str:
    answer = await graph.post(f"{PNID}/messages", SEED.token, template_send(name), attempts=1)
    return str(answer["messages"][0]["id"])


@pytest.mark.parametrize("category", ["UTILITY", "MARKETING"])
async def test_a_cpr_template_is_created_and_listed_with_its_component(graph, category: str) -> None:  # type: ignore[no-untyped-def]
    created = await create(graph, "call_permission_ask", [BODY, CPR], category)
    assert created["status"] == "APPROVED" and created["category"] == category and created["id"]
    listed = await graph.get(f"{SEED.waba_id}/message_templates", SEED.token, {"name": "call_permission_ask"})
    [template] = listed["data"]
    assert [c["type"] for c in template["components"]] == ["BODY", "CALL_PERMISSION_REQUEST"]


async def test_only_marketing_or_utility_may_carry_the_component(graph) -> None:  # type: ignore[no-untyped-def]
    why = await refused(graph, "cpr_auth", [BODY, CPR], "AUTHENTICATION")
    assert "MARKETING or UTILITY" in why and "AUTHENTICATION" in why


async def test_the_body_is_required_and_not_empty(graph) -> None:  # type: ignore[no-untyped-def]
    assert "BODY" in await refused(graph, "cpr_no_body", [CPR])
    assert "non-empty body" in await refused(graph, "cpr_blank", [{"type": "body", "text": "  "}, CPR])


async def test_the_component_is_not_combined_with_buttons(graph) -> None:  # type: ignore[no-untyped-def]
    buttons = {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Yes"}]}
    assert "cannot be combined with buttons" in await refused(graph, "cpr_buttons", [BODY, CPR, buttons])
    assert "at most once" in await refused(graph, "cpr_twice", [BODY, CPR, CPR])


async def test_the_same_name_and_language_twice_is_refused(graph) -> None:  # type: ignore[no-untyped-def]
    await create(graph, "call_permission_ask", [BODY, CPR])
    with pytest.raises(GraphError) as info:
        await create(graph, "call_permission_ask", [BODY, CPR])
    assert info.value.code == 2388024


async def test_sending_a_cpr_template_is_a_request_limited_like_the_interactive_one(graph) -> None:  # type: ignore[no-untyped-def]
    await create(graph, "call_permission_ask", [BODY, CPR])
    phone = graph.sim.phones[PNID]
    wamid = await send(graph, "call_permission_ask")
    assert phone.sent[-1]["rendered"]["call_permission_request"] is True
    assert len(phone.permission_requests[USER]) == 1
    view = await graph.get(f"{PNID}/call_permissions", SEED.token, {"user_wa_id": USER})
    ask = {a["action_name"]: a for a in view["actions"]}["send_call_permission_request"]
    assert ask["can_perform_action"] is False and ask["limits"][0]["current_usage"] == 1
    with pytest.raises(GraphError) as limited:  # a second request the same day: 138009, nothing sent
        await send(graph, "call_permission_ask")
    assert limited.value.code == 138009 and phone.sent[-1]["id"] == wamid
    # the customer answers the template's request: the permission is granted
    change = permission_reply(phone, USER, context_id=wamid)
    assert change["value"]["messages"][0]["interactive"]["call_permission_reply"]["response"] == "accept"
    view = await graph.get(f"{PNID}/call_permissions", SEED.token, {"user_wa_id": USER})
    assert view["permission"]["status"] == "temporary"


async def test_a_template_without_the_component_is_no_request(graph) -> None:  # type: ignore[no-untyped-def]
    await create(graph, "plain_notice", [BODY])
    phone = graph.sim.phones[PNID]
    await send(graph, "plain_notice")
    await send(graph, "plain_notice")  # no request limit counted
    assert "call_permission_request" not in phone.sent[-1]["rendered"]
    assert phone.permission_requests.get(USER) is None
    with pytest.raises(ValueError, match="no call permission request was sent"):
        permission_reply(phone, USER)  # nothing the customer could answer
    view = await graph.get(f"{PNID}/call_permissions", SEED.token, {"user_wa_id": USER})
    assert view["permission"] == {"status": "no_permission"}
