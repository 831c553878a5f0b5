"""Pure rules of the Meta side: signatures, handshake, Graph errors, hints, read-back, token health."""

from __future__ import annotations

import datetime as dt

import pytest

from thoth_pbx.clients.meta.graph import (
    GraphAuthError,
    GraphError,
    GraphRateLimited,
    GraphUnavailable,
    error_from_response,
    should_retry,
)
from thoth_pbx.clients.meta.webhook import handshake_reply, signature_ok
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.tokens import parse_debug_token, token_warning
from thoth_pbx.features.trunk.calling import enable_body, hint_for, read_back
from thoth_pbx.sandbox.meta import sign

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def test_signature_matches_metas_independent_computation() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    assert signature_ok(body, sign(body, "s3cret"), "s3cret")
    assert not signature_ok(body + b" ", sign(body, "s3cret"), "s3cret")
    assert not signature_ok(body, sign(body, "other"), "s3cret")
    assert not signature_ok(body, sign(body, "s3cret").upper(), "s3cret")
    for header in (None, "", "sha256=", "sha1=abc", sign(body, "s3cret")[7:]):
        assert not signature_ok(body, header, "s3cret")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}, "hub.verify_token"),
        ({"hub.mode": "subscribe", "hub.challenge": "1"}, "hub.verify_token"),
        ({"hub.mode": "subscribed", "hub.verify_token": "tok", "hub.challenge": "1"}, "hub.mode"),
        ({"hub.mode": "subscribe", "hub.verify_token": "tok"}, "hub.challenge"),
    ],
)
def test_handshake_failures(params, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FieldError) as info:
        handshake_reply(params, "tok")
    assert info.value.field == field and info.value.status == 403


def test_handshake_success() -> None:
    assert handshake_reply({"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "987"}, "tok") == "987"


def test_graph_error_shape_becomes_typed_exception() -> None:
    body = {
        "error": {
            "message": "(#138018) ...",
            "type": "OAuthException",
            "code": 138018,
            "error_subcode": 2593001,
            "error_data": {"messaging_product": "whatsapp", "details": "configure SIP"},
            "fbtrace_id": "AbC",
        }
    }
    exc = error_from_response(400, body)
    assert type(exc) is GraphError
    assert (exc.code, exc.subcode, exc.fbtrace_id, exc.details, exc.http_status) == (
        138018,
        2593001,
        "AbC",
        "configure SIP",
        400,
    )
    assert "138018" in str(exc) and "AbC" in str(exc)
    assert isinstance(error_from_response(401, {"error": {"code": 190, "message": "bad"}}), GraphAuthError)
    assert isinstance(error_from_response(400, {"error": {"code": 130429, "message": "slow"}}), GraphRateLimited)
    assert isinstance(error_from_response(502, "<html>"), GraphUnavailable)


def test_retry_policy() -> None:
    transient = error_from_response(500, {"error": {"code": 131000, "message": "went wrong"}})
    limited = error_from_response(400, {"error": {"code": 80007, "message": "rate"}})
    auth = error_from_response(401, {"error": {"code": 190, "message": "expired", "is_transient": True}})
    invalid = error_from_response(400, {"error": {"code": 100, "message": "invalid"}})
    assert should_retry(transient, idempotent=True) and not should_retry(transient, idempotent=False)
    assert should_retry(limited, idempotent=False)  # throttled: nothing was done, repeat is safe
    assert not should_retry(auth, idempotent=True) and not should_retry(invalid, idempotent=True)
    assert should_retry(error_from_response(400, {"error": {"code": 100, "is_transient": True}}), idempotent=True)


@pytest.mark.parametrize(
    ("code", "subcode", "words"),
    [
        (138015, None, "2,000"),
        (138018, None, "SIP hostname"),
        (100, None, "parameter"),
        (131055, None, "SIP enabled"),
        (190, None, "token"),
        (100, 33, "phone number id"),
        (250, None, "Permission"),
        (999999, None, "999999"),
        (None, None, "reached"),
    ],
)
def test_hints(code, subcode, words: str) -> None:  # type: ignore[no-untyped-def]
    assert words in hint_for(code, subcode)


def test_hint_for_invalid_parameter_quotes_metas_details() -> None:
    assert hint_for(100, None, "Param calling[sip][servers][0][hostname] is required").endswith("is required")


def _settings(**calling):  # type: ignore[no-untyped-def]
    base = {
        "status": "ENABLED",
        "srtp_key_exchange_protocol": "SDES",
        "sip": {
            "status": "ENABLED",
            "servers": [
                {"app_id": "1", "hostname": "pbx.example.com", "port": 5061, "sip_user_password": "pw-123456789"}
            ],
        },
    }
    base.update(calling)
    return {"calling": base}


def test_read_back_accepts_a_match_and_strips_the_password() -> None:
    back = read_back(_settings(), hostname="pbx.example.com", port=5061, want_enabled=True, app_id="1")
    assert back.problems == [] and back.password == "pw-123456789"
    assert "sip_user_password" not in str(back.state)


def test_read_back_port_absent_means_default() -> None:
    settings = _settings()
    del settings["calling"]["sip"]["servers"][0]["port"]
    assert read_back(settings, hostname="pbx.example.com", port=5061, want_enabled=True).problems == []
    assert read_back(settings, hostname="pbx.example.com", port=5081, want_enabled=True).problems


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"status": "DISABLED"}, "calling.status"),
        ({"srtp_key_exchange_protocol": "DTLS"}, "srtp"),
        ({"sip": {"status": "ENABLED", "servers": []}}, "expected pbx.example.com"),
        ({"sip": {"status": "ENABLED", "servers": [{"hostname": "pbx.example.com", "port": 5062}]}}, "port 5062"),
        (
            {"sip": {"status": "ENABLED", "servers": [{"hostname": "pbx.example.com", "port": 5061}]}},
            "sip_user_password",
        ),
        (
            {
                "sip": {
                    "status": "ENABLED",
                    "servers": [{"hostname": "pbx.example.com", "app_id": "2", "sip_user_password": "x" * 10}],
                }
            },
            "app 2",
        ),
    ],
)
def test_read_back_problems(change, words: str) -> None:  # type: ignore[no-untyped-def]
    problems = read_back(
        _settings(**change), hostname="pbx.example.com", port=5061, want_enabled=True, app_id="1"
    ).problems
    assert any(words in p for p in problems), problems


def test_enable_body_is_the_documented_minimum() -> None:
    assert enable_body("pbx.example.com", 5061) == {
        "calling": {
            "status": "ENABLED",
            "srtp_key_exchange_protocol": "SDES",
            "sip": {"status": "ENABLED", "servers": [{"hostname": "pbx.example.com", "port": 5061}]},
        }
    }


def test_debug_token_parsing_and_warnings() -> None:
    expires = int((NOW + dt.timedelta(days=3)).timestamp())
    info = parse_debug_token(
        {
            "data": {
                "app_id": "1",
                "type": "USER",
                "is_valid": True,
                "expires_at": expires,
                "scopes": ["whatsapp_business_management"],
            }
        }
    )
    assert info.expires_at == NOW + dt.timedelta(days=3) and info.as_json()["missing_scopes"] == [
        "whatsapp_business_messaging"
    ]
    assert "expires in 3 day(s)" in token_warning(info.expires_at, NOW, info.as_json())
    permanent = parse_debug_token(
        {
            "data": {
                "is_valid": True,
                "expires_at": 0,
                "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
            }
        }
    )
    assert permanent.expires_at is None and token_warning(None, NOW, permanent.as_json()) is None
    assert "expired" in token_warning(NOW - dt.timedelta(hours=1), NOW)
    assert "5 hour(s)" in token_warning(NOW + dt.timedelta(hours=5, minutes=30), NOW)
    assert token_warning(NOW + dt.timedelta(days=30), NOW) is None
    dead = parse_debug_token({"data": {"is_valid": False, "error": {"code": 190, "message": "Session has expired"}}})
    assert "not valid" in token_warning(None, NOW, dead.as_json())
