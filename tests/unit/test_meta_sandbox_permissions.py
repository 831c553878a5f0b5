"""The Meta simulator's call permissions: the request limits (1 per 24 h, 2 per 7 days per user,
then 138009) shown in GET call_permissions and enforced on the request message; an accepted reply
grants a 7-day permission (developers.facebook.com/docs/whatsapp/cloud-api/calling/user-call-permissions)."""

from __future__ import annotations

import time

import pytest

from thoth_pbx.sandbox.meta.methods import call_permissions_view, send_message
from thoth_pbx.sandbox.meta.permissions import permission_reply
from thoth_pbx.sandbox.meta.state import GraphFail, SimPhone

USER = "79991000001"


def _request(phone: SimPhone, now: float) -> dict:  # type: ignore[type-arg]
    body = {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "call_permission_request",
            "action": {"name": "call_permission_request"},
            "body": {"text": "May we call?"},
        },
    }
    return send_message(phone, body, now=now)


def test_request_limits_per_day_and_week() -> None:
    phone = SimPhone("1", "+15550100001", "w", enforce_window=False)
    now = time.time()
    _request(phone, now - 3 * 86400)
    view = call_permissions_view(phone, USER)
    ask = view["actions"][0]
    assert ask["can_perform_action"] is True and [lim["current_usage"] for lim in ask["limits"]] == [0, 1]
    _request(phone, now)
    with pytest.raises(GraphFail) as limited:
        _request(phone, now + 2 * 86400)  # the second of this week was today: 2 a week
    assert limited.value.code == 138009
    view = call_permissions_view(phone, USER)
    assert view["actions"][0]["can_perform_action"] is False
    assert view["permission"] == {"status": "no_permission"}


def test_an_accepted_reply_grants_a_temporary_permission_and_is_a_messages_change() -> None:
    phone = SimPhone("1", "+15550100001", "w", enforce_window=False)
    _request(phone, time.time())
    change = permission_reply(phone, "+" + USER, context_id="wamid.ask")
    message = change["value"]["messages"][0]
    assert change["field"] == "messages" and message["interactive"]["type"] == "call_permission_reply"
    assert message["interactive"]["call_permission_reply"]["response"] == "accept"
    assert message["context"]["id"] == "wamid.ask"
    view = call_permissions_view(phone, USER)
    assert view["permission"]["status"] == "temporary" and view["actions"][1]["can_perform_action"] is True
    other = "79991000002"
    phone.permission_requests[other] = [time.time()]  # asked too
    permission_reply(phone, other, accept=False)
    assert call_permissions_view(phone, other)["permission"] == {"status": "no_permission"}


def test_only_a_user_who_was_asked_can_answer() -> None:
    phone = SimPhone("1", "+15550100001", "w")
    with pytest.raises(ValueError, match="no call permission request was sent"):
        permission_reply(phone, USER)
    assert call_permissions_view(phone, USER)["permission"] == {"status": "no_permission"}
