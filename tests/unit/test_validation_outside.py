"""One rule per kind of value, whoever supplies it: ASCII digits only, no free text after '%'."""

from __future__ import annotations

import pytest

from thoth_pbx.core import validation as v
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.calls.callflow import CallSettings, normalise_number
from thoth_pbx.features.trunk import render as trunk

NON_ASCII_DIGITS = ["\u0661\u0662\u0663", "\uff11\uff12\uff13", "12\u0663", "\u09e7\u09e8"]


@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
def test_non_ascii_digits_are_not_numbers(value: str) -> None:
    for check in (v.digits_id, v.integer, v.port):
        with pytest.raises(FieldError):
            check("field", value)
    with pytest.raises(FieldError):
        v.e164("number", "+1415555" + value)
    with pytest.raises(FieldError):
        v.extension("extension", value)
    assert not v.is_extension(value)
    assert normalise_number("+1415555" + value) is None


@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
def test_non_ascii_digits_never_reach_pjsip_section_names(value: str) -> None:
    with pytest.raises(FieldError) as err:
        trunk.parse_trunk({"endpoint_name": "wa" + value})
    assert err.value.field == "endpoint_name"
    with pytest.raises(FieldError):
        trunk.parse_trunk({"tos": value})


def test_ascii_numbers_still_pass() -> None:
    assert v.digits_id("phone_number_id", " 1234567890 ") == "1234567890"
    assert v.integer("n", "-12") == -12 and v.port("p", "5061") == 5061
    assert v.e164("number", "+1 415 555 0123") == "+14155550123"
    assert v.extension("extension", 101) == "101" and v.extension("extension", "op_7-a") == "op_7-a"


@pytest.mark.parametrize("value", ["fe80::1%eth0 ; evil", "fe80::1%[x]", "fe80::1%" + "a" * 40, "fe80::1%"])
def test_ipv6_scope_id_must_be_an_interface_name(value: str) -> None:
    with pytest.raises(FieldError) as err:
        v.ip_address("address", value)
    assert err.value.field == "address" and "scope id" in err.value.message


def test_ipv6_scope_id_with_interface_name_or_index_passes() -> None:
    assert v.ip_address("address", "fe80::1%eth0") == "fe80::1%eth0"
    assert v.ip_address("address", "fe80::1%3") == "fe80::1%3"


@pytest.mark.parametrize("value", ["100/sip:+19005550100@attacker.example", "100&PJSIP/999", "10 1", "", "x" * 33])
def test_extension_rule_is_the_admins_rule(value: str) -> None:
    with pytest.raises(FieldError):
        v.extension("extension", value)
    with pytest.raises(FieldError) as err:
        CallSettings.from_json({"ring_group": [value]})
    assert err.value.field == "calls.ring_group[0]"
