"""Typed telephony requests and the user <-> extension map (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from thoth_pbx.clients.bitrix.telephony import INCOMING, FinishCall, RegisterCall, RegisteredCall, line_number_for
from thoth_pbx.features.portal.users import PortalUser, extension_map, parse_user


def test_register_params_use_bitrix_names_and_leave_out_what_is_unset() -> None:
    start = dt.datetime(2026, 3, 7, 10, 20, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    request = RegisterCall(
        "+14155550100",
        INCOMING,
        "1710140185.18441",
        user_phone_inner="101",
        line_number=line_number_for("+1 415 555 0123"),
        call_start_date=start,
    )
    assert request.params() == {
        "USER_PHONE_INNER": "101",
        "PHONE_NUMBER": "+14155550100",
        "TYPE": 2,
        "EXTERNAL_CALL_ID": "1710140185.18441",
        "CRM_CREATE": 0,
        "SHOW": 1,
        "ADD_TO_CHAT": 1,
        "LINE_NUMBER": "14155550123",
        "CALL_START_DATE": "2026-03-07T10:20:30+03:00",
    }


@pytest.mark.parametrize(
    "request_",
    [
        RegisterCall("+14155550100", 9, "x", user_id=1),
        RegisterCall("+14155550100", INCOMING, "x"),
        RegisterCall("+14155550100", INCOMING, "x", user_id=1, call_start_date=dt.datetime(2026, 1, 1)),
    ],
)
def test_register_refuses_what_bitrix_would_refuse(request_: RegisterCall) -> None:
    with pytest.raises(ValueError):
        request_.params()


def test_finish_always_says_add_to_chat_explicitly() -> None:
    # the module code reads a missing ADD_TO_CHAT as false, the new docs say true: never leave it out
    assert FinishCall(user_id=5, duration=-3).params() == {"USER_ID": 5, "DURATION": 0, "ADD_TO_CHAT": 1}
    assert FinishCall(user_id=5, add_to_chat=False, status_code="603-S").params()["ADD_TO_CHAT"] == 0


def test_register_result_parsing() -> None:
    parsed = RegisteredCall.from_result(
        {
            "CALL_ID": "externalCall.716f.1773130779",
            "CRM_CREATED_LEAD": None,
            "CRM_CREATED_ENTITIES": [],
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": "797",
        }
    )
    assert parsed.call_id == "externalCall.716f.1773130779" and parsed.crm_entity_id == 797
    with pytest.raises(ValueError):
        RegisteredCall.from_result({"CRM_ENTITY_TYPE": "CONTACT"})


def test_user_map_keeps_active_users_with_an_extension_and_the_lower_id_on_a_clash() -> None:
    users = [
        parse_user(u)
        for u in (
            {"ID": "7", "NAME": "Ann", "LAST_NAME": "Lee", "ACTIVE": True, "UF_PHONE_INNER": "101"},
            {"ID": "3", "NAME": "Bob", "ACTIVE": True, "UF_PHONE_INNER": "101"},
            {"ID": "4", "NAME": "Cy", "ACTIVE": False, "UF_PHONE_INNER": "102"},
            {"ID": "5", "NAME": "", "ACTIVE": "Y", "UF_PHONE_INNER": ""},
        )
    ]
    assert users[0] == PortalUser(7, "Ann Lee", "101", True) and users[3] == PortalUser(5, "user 5", None, True)
    assert extension_map([u for u in users if u]) == {"101": 3}
    assert parse_user({"NAME": "no id"}) is None


def test_an_owner_found_on_the_lead_the_register_created_is_not_the_callers_manager() -> None:
    from thoth_pbx.clients.bitrix.telephony import CrmMatch, RegisteredCall, known_before

    registered = RegisteredCall.from_result(
        {
            "CALL_ID": "externalCall.1",
            "CRM_CREATED_LEAD": 1041,
            "CRM_CREATED_ENTITIES": [
                {"ENTITY_TYPE": "LEAD", "ENTITY_ID": 1041},
                {"ENTITY_TYPE": "CONTACT", "ENTITY_ID": "77"},
            ],
        }
    )
    assert registered.created() == {("LEAD", 1041), ("CONTACT", 77)}
    old_contact = CrmMatch("CONTACT", 12, "Ivan", 5, "104")
    matches = [CrmMatch("LEAD", 1041, "+7999", 2, "101"), CrmMatch("CONTACT", 77, "x", 2, None), old_contact]
    assert known_before(matches, registered) == [old_contact]
    nothing_created = RegisteredCall.from_result(
        {"CALL_ID": "externalCall.2", "CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 12}
    )
    assert known_before(matches, nothing_created) == matches
