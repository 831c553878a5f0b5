"""Click-to-call's pure rules: settings, the permission decision, and every way a call-back ends
as a Bitrix24 STATUS_CODE with its reason (telephony.externalCall.finish STATUS_CODE values:
https://apidocs.bitrix24.com/api-reference/telephony/telephony-external-call-finish.html; Meta's
refusals: developers.facebook.com/documentation/business-messaging/whatsapp/calling/sip)."""

from __future__ import annotations

import pytest

from thoth_pbx.clients.meta.permissions import CallPermission
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.callback import decide
from thoth_pbx.features.callback.decide import CallbackSettings, Outcome
from thoth_pbx.features.callback.service import e164
from thoth_pbx.features.messaging.template_command import Template


def test_permission_answer_parsed_from_graph_shape() -> None:
    body = {
        "messaging_product": "whatsapp",
        "permission": {"status": "temporary", "expiration_time": 1745343479},
        "actions": [
            {"action_name": "send_call_permission_request", "can_perform_action": False, "limits": []},
            {"action_name": "start_call", "can_perform_action": True, "limits": []},
        ],
    }
    permission = CallPermission.from_json(body)
    assert permission == CallPermission("temporary", True, False, 1745343479)
    assert decide.may_call(permission.status, permission.can_call)


@pytest.mark.parametrize(
    ("status", "can_call", "expected"),
    [("permanent", True, True), ("temporary", False, False), ("no_permission", True, False)],
)
def test_dial_only_with_a_permission_that_may_start_a_call(status: str, can_call: bool, expected: bool) -> None:
    assert decide.may_call(status, can_call) is expected


def test_no_permission_says_how_it_was_asked() -> None:
    assert decide.no_permission(True, "interactive") == Outcome(
        "403", "No WhatsApp call permission from the customer: permission asked with an interactive message"
    )
    assert "permission template" in (decide.no_permission(True, "template").reason or "")
    assert "cannot be asked" in (decide.no_permission(False, None).reason or "")


def test_each_graph_refusal_has_its_own_reason() -> None:
    outcomes = {code: decide.graph_refusal(code, "x") for code in (138006, 138009, 138012)}
    assert outcomes[138006].status_code == "403" and "138006" in (outcomes[138006].reason or "")
    assert outcomes[138009].status_code == "423" and "request limit" in (outcomes[138009].reason or "")
    assert outcomes[138012].status_code == "423" and "100 connected calls" in (outcomes[138012].reason or "")
    assert len({o.reason for o in outcomes.values()}) == 3
    assert decide.graph_refusal(131000, "Something went wrong").status_code == "OTHER"


@pytest.mark.parametrize(
    ("tech", "cause", "sip", "status"),
    [
        (None, 17, 486, "603"),  # Meta: 486 = declined
        (None, 19, 480, "480"),
        (None, 21, 403, "403"),
        ("487", None, 487, "603-S"),
        (486, 16, 486, "603"),  # tech_cause wins over the Q.850 cause
    ],
)
def test_sip_answers_of_the_customer_leg(tech: object, cause: int | None, sip: int, status: str) -> None:
    assert decide.sip_status(tech, cause) == sip
    assert decide.customer_refusal(sip, we_cancelled=False).status_code == status


def test_our_own_timeout_is_missed_and_operator_outcomes() -> None:
    assert decide.customer_refusal(487, we_cancelled=True).status_code == "304"
    assert decide.operator_missed("BUSY").status_code == "486"
    assert decide.operator_missed("NOANSWER").status_code == "304"
    assert decide.operator_missed("CHANUNAVAIL").status_code == "480"


def test_settings_defaults_and_errors_name_the_field() -> None:
    settings = CallbackSettings.from_json(None)
    assert settings.auto_call_back is False and settings.operator_endpoint == "PJSIP/{extension}"
    assert CallbackSettings.from_json({"auto_call_back": True, "template_name": "call_me"}).template_name == "call_me"
    with pytest.raises(FieldError) as bad:
        CallbackSettings.from_json({"auto_callback": True})
    assert bad.value.field == "callback.auto_callback"
    with pytest.raises(FieldError) as bad:
        CallbackSettings.from_json({"operator_endpoint": "PJSIP/101"})
    assert bad.value.field == "callback.operator_endpoint"
    with pytest.raises(FieldError) as bad:
        CallbackSettings.from_json({"customer_ring_seconds": 1})
    assert bad.value.field == "callback.customer_ring_seconds"


def test_customer_numbers() -> None:
    assert e164("+7 (999) 100-00-01") == "+79991000001"
    assert e164("79991000001") == "+79991000001"
    assert e164("abc") is None and e164("") is None


# the messaging feature's synchronised template, as app.py hands it to click-to-call
Synced = Template


ASK = Synced(
    "call_permission_ask",
    "en_US",
    "APPROVED",
    [{"type": "BODY", "text": "May we call you?"}, {"type": "CALL_PERMISSION_REQUEST"}],
)


def test_the_permission_template_must_be_known_approved_and_carry_the_component() -> None:
    """Meta's call permission request templates (.../templates/utility-templates/utility-call-
    permission-request-templates/): only a template with the `call_permission_request` component
    asks; the check names which of the three is wrong."""
    refusal = decide.template_refusal
    assert refusal([ASK], "call_permission_ask", "en_US") is None
    lower = Synced("ask", "ru", "APPROVED", [{"type": "body", "text": "?"}, {"type": "call_permission_request"}])
    assert refusal([lower], "ask", "ru") is None  # the type in either case
    assert refusal(None, "call_permission_ask", "en_US") is None  # never synchronised: sent as configured
    unknown = refusal([ASK], "call_permission_ask", "ru")
    assert unknown == Outcome(
        "403",
        "Permission not asked: the permission template call_permission_ask+ru is not among this WhatsApp "
        "account's templates",
    )
    pending = refusal(
        [Synced("call_permission_ask", "en_US", "PENDING", ASK.components)], "call_permission_ask", "en_US"
    )
    assert pending == Outcome(
        "403", "Permission not asked: the permission template call_permission_ask+en_US is PENDING, not APPROVED"
    )
    plain = refusal(
        [Synced("call_permission_ask", "en_US", "APPROVED", ASK.components[:1])], "call_permission_ask", "en_US"
    )
    assert plain == Outcome(
        "403",
        "Permission not asked: the permission template call_permission_ask+en_US has no call permission request "
        "component",
    )
