"""Trunk settings validation: every bad value is a FieldError naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk import render as trunk


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("bind_address", "0.0.0.0:5061", "not an IP address"),
        ("bind_port", 70000, "at most 65535"),
        ("bind_port", "x", "whole number"),
        ("cert_file", "keys/cert.pem", "absolute path"),
        ("cert_file", "/etc/../shadow", "'..'"),
        ("cert_file", "/etc/my cert.pem", "absolute path"),
        ("external_signaling_address", "-bad-.example.com", "RFC 1123"),
        ("external_media_address", "300.1.1.1", "not an IP address"),
        ("local_net", ["10.8.0.0/24", "10.8.0.0/33"], "not an IP address or network"),
        ("local_net", ["10.8.0.0/24", "10.8.0.0/24"], "duplicate"),
        ("identify_match", [], "at least 1"),
        ("identify_match", "69.171.251.0/24 banana", "not an IP address or network"),
        ("context", "general", "not a usable dialplan context"),
        ("context", "from meta", "not a usable dialplan context"),
        ("transport_name", "tls]", "not a valid section name"),
        ("contact", "http://wa.meta.vc", "not a SIP URI"),
        ("contact", "sip:wa.meta.vc:99999", "at most 65535"),
        ("method", "tlsv9", "must be one of"),
        ("tos", "cs9", "DSCP"),
        ("cos", 8, "at most 7"),
        ("qualify_frequency", -1, "at least 0"),
        ("codecs", [], "at least 1"),
        ("codecs", ["opus", "OPUS"], "duplicate"),
        ("fallback_dial", "PJSIP/100,30", "not a Dial() target"),
        ("fallback_dial", "${EVIL}", "not a Dial() target"),
        ("fallback_timeout", 0, "at least 1"),
        ("verify_server", "maybe", "true or false"),
        ("language", "english", "language code"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any, fragment: str) -> None:
    with pytest.raises(FieldError) as err:
        trunk.parse_trunk({field: value})
    assert err.value.field.split("[")[0] == field
    assert fragment in err.value.message


def test_list_entry_errors_name_the_index() -> None:
    with pytest.raises(FieldError) as err:
        trunk.parse_trunk({"local_net": ["10.0.0.0/8", "nope"]})
    assert err.value.field == "local_net[1]"


def test_unknown_key_is_refused_and_named() -> None:
    with pytest.raises(FieldError) as err:
        trunk.parse_trunk({"bind_adress": "0.0.0.0"}, layer_names=["the [trunk] table"])
    assert err.value.field == "bind_adress" and "the [trunk] table" in err.value.message


def test_layers_later_wins_null_and_empty_omit() -> None:
    settings = trunk.parse_trunk({"bind_port": 5062, "timers": "yes"}, {"bind_port": 5063}, {"timers": None})
    assert settings.bind_port == 5063 and settings.timers is None
    assert trunk.parse_trunk({"timers": ""}).timers is None
    assert trunk.DEFAULTS.timers == "no"
    with pytest.raises(FieldError) as err:
        trunk.parse_trunk({"bind_port": None})
    assert err.value.field == "bind_port" and "always written" in err.value.message


def test_accepted_forms_are_kept_as_written() -> None:
    settings = trunk.parse_trunk(
        {
            "identify_match": ["69.171.251.0/255.255.255.0", "2a03:2880::/32", "157.240.0.1"],
            "external_signaling_address": "PBX.Example.COM.",
            "tos": 96,
            "codecs": "opus, ulaw",
        }
    )
    assert settings.identify_match == ("69.171.251.0/255.255.255.0", "2a03:2880::/32", "157.240.0.1")
    assert settings.external_signaling_address == "pbx.example.com"
    assert settings.tos == 96 and settings.codecs == ("opus", "ulaw")


def test_apply_problems_list_the_missing_certificate() -> None:
    assert [p.field for p in trunk.apply_problems(trunk.parse_trunk({}))] == ["cert_file", "priv_key_file"]
    assert trunk.apply_problems(trunk.parse_trunk({"cert_file": "/a.crt", "priv_key_file": "/a.key"})) == []


def test_phone_password_with_line_break_is_refused() -> None:
    with pytest.raises(FieldError) as err:
        trunk.render(trunk.parse_trunk({}), [trunk.TrunkPhone("+15551230000", "abc\n[evil]", None)])
    assert err.value.field == "phones[+15551230000].sip_user_password"
