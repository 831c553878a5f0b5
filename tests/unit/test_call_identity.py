"""Who is calling: the caller from the INVITE's From user and Meta's BSUID headers, and what a
caller without a phone number is registered with in Bitrix24.

Meta: developers.facebook.com/docs/whatsapp/business-scoped-user-ids ("SIP invites for
user-initiated calls": From user is the BSUID unless Meta shares the number; x-wa-meta-user-id,
x-wa-meta-user-name, x-wa-meta-user-country-code). Bitrix24:
api-reference/telephony/telephony-external-call-register.md (PHONE_NUMBER required, format not
documented; CRM_CREATE creates "if no suitable object is found by the number").
"""

from __future__ import annotations

import datetime as dt

import pytest

from thoth_pbx.clients.bitrix.telephony import RegisterCall
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.calls.callflow import CallSettings
from thoth_pbx.features.calls.identity import caller_identity, from_stasis_args
from thoth_pbx.features.calls.notifier import contact_fields, without_phone
from thoth_pbx.features.customers import Customer

BSUID = "US.13491208655302741918"


def test_a_phone_number_from_user_is_the_caller_with_the_bsuid_header_as_identity() -> None:
    who = caller_identity("+79990000001", BSUID, "jane.doe", "US")
    assert (who.phone, who.bsuid, who.username, who.country, who.rejected) == (
        "+79990000001",
        BSUID,
        "jane.doe",
        "US",
        (),
    )
    assert who.caller == "+79990000001"


def test_a_bsuid_from_user_without_headers_is_known_by_bsuid_only() -> None:
    who = caller_identity(BSUID)
    assert (who.phone, who.bsuid, who.username) == (None, BSUID, None)
    assert who.caller == BSUID and who.display == BSUID
    assert caller_identity("US.ENT.11815799212886844830").bsuid == "US.ENT.11815799212886844830"


def test_the_header_bsuid_wins_and_the_username_is_shown_with_an_at() -> None:
    who = caller_identity(BSUID, "GB.77", "@jane_2026", "GB")
    assert (who.bsuid, who.username, who.country) == ("GB.77", "jane_2026", "GB")
    assert who.display == "@jane_2026"


@pytest.mark.parametrize(
    ("args", "rejected"),
    [
        (("x'); DROP TABLE call;--", None, None, None), ("from",)),
        ((BSUID, "US.1,2", None, None), ("x-wa-meta-user-id",)),
        ((BSUID, "../../etc", None, None), ("x-wa-meta-user-id",)),
        ((BSUID, None, "ja ne", None), ("x-wa-meta-user-name",)),
        ((BSUID, None, "a" * 36, None), ("x-wa-meta-user-name",)),
        ((BSUID, None, "123", None), ("x-wa-meta-user-name",)),  # needs a letter (Meta's rule)
        ((BSUID, None, "[URL=x]y[/URL]", None), ("x-wa-meta-user-name",)),
        ((BSUID, None, None, "usa"), ("x-wa-meta-user-country-code",)),
        ((BSUID, "US." + "9" * 129, None, None), ("x-wa-meta-user-id",)),
    ],
)
def test_values_of_the_wrong_shape_are_rejected_not_repaired(
    args: tuple[str | None, str | None, str | None, str | None], rejected: tuple[str, ...]
) -> None:
    who = caller_identity(*args)
    assert who.rejected == rejected
    for value in (who.phone, who.bsuid, who.username, who.country):
        assert value is None or value in (BSUID,), value


def test_a_caller_with_nothing_usable_is_unknown() -> None:
    who = caller_identity("anonymous")
    assert (who.phone, who.bsuid, who.caller, who.rejected) == (None, None, "unknown", ("from",))
    assert caller_identity(None).caller == "unknown"


def test_stasis_arguments_are_read_by_position_and_may_be_missing_or_empty() -> None:
    full = from_stasis_args(BSUID, ["+14155550123", "wacid.1", "US.5", "jane", "US"])
    assert (full.bsuid, full.username, full.country) == ("US.5", "jane", "US")
    empty = from_stasis_args(BSUID, ["+14155550123", "wacid.1", "", "", ""])
    assert (empty.bsuid, empty.username, empty.country, empty.rejected) == (BSUID, None, None, ())
    old_dialplan = from_stasis_args("+79990000001", ["+14155550123", "wacid.1"])  # before this change
    assert (old_dialplan.phone, old_dialplan.bsuid) == ("+79990000001", None)


def _request(**kw: object) -> RegisterCall:
    base: dict[str, object] = {
        "phone_number": BSUID,
        "type": 2,
        "external_call_id": "1710000000.1",
        "user_id": 1,
        "line_number": "14155550123",
        "call_start_date": dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
        "crm_create": True,
        "show": False,
    }
    return RegisterCall(**(base | kw))  # type: ignore[arg-type]


def test_without_a_number_register_gets_the_placeholder_and_never_crm_create() -> None:
    customer = Customer(bsuid=BSUID, username="jane.doe", profile_name=None)
    request, contact = without_phone(_request(), customer, CallSettings())
    params = request.params()
    assert params["PHONE_NUMBER"] == "0000000000" and params["CRM_CREATE"] == 0
    assert "CRM_ENTITY_ID" not in params
    assert contact is not None and contact["NAME"] == "@jane.doe" and contact["LAST_NAME"] == ""
    assert contact["COMMENTS"] == f"WhatsApp @jane.doe, BSUID {BSUID}"


def test_a_linked_crm_entity_binds_the_call_and_no_contact_is_made() -> None:
    customer = Customer(bsuid=BSUID, username="jane", crm_entity_type="CONTACT", crm_entity_id=42)
    request, contact = without_phone(_request(), customer, CallSettings())
    params = request.params()
    assert (params["CRM_ENTITY_TYPE"], params["CRM_ENTITY_ID"], params["CRM_CREATE"]) == ("CONTACT", 42, 0)
    assert contact is None


def test_no_contact_when_the_portal_does_not_create_crm_entities_and_the_placeholder_is_configurable() -> None:
    settings = CallSettings.from_json({"crm_create": False, "no_phone_number": "000"})
    request, contact = without_phone(_request(), Customer(bsuid=BSUID), settings)
    assert contact is None and request.params()["PHONE_NUMBER"] == "000"
    with pytest.raises(FieldError) as bad:
        CallSettings.from_json({"no_phone_number": "+1 (555)"})
    assert bad.value.field == "calls.no_phone_number"


def test_the_profile_name_is_the_contact_name_and_never_reaches_the_bb_code_comment() -> None:
    customer = Customer(bsuid=BSUID, username="jane", profile_name="[B]Jane[/B] Doe")
    fields = contact_fields(customer)
    assert fields["NAME"] == "[B]Jane[/B] Doe" and fields["LAST_NAME"] == "@jane"
    assert "Jane" not in fields["COMMENTS"]
