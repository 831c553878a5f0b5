"""Property: no accepted trunk setting can add a section, an option or a directive.

The check parses the rendered files with thoth_pbx.features.trunk.conffile (which follows Asterisk's
config.c); tests/integration/test_pbx_parse.py runs the same strategies through the real
Asterisk's own parser (AMI GetConfig).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import trunk_fuzz
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk import render as trunk


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trunk_fuzz.field_and_value())
def test_accepted_values_never_change_the_file_structure(example: tuple[str, Any]) -> None:
    field, value = example
    try:
        files = trunk_fuzz.render_with(field, value)
    except FieldError as exc:
        # refused with the field named (phones are named by number)
        assert exc.field.split("[")[0] in (field, "phones"), exc.field
        return
    trunk_fuzz.check_rendered(field, value, files)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_sip_password_round_trips_through_escaping(password: str) -> None:
    """Meta generates the password; whatever we accept must reach Asterisk unchanged."""
    try:
        files = trunk_fuzz.render_with("phone.password", password)
    except FieldError as exc:
        assert exc.field == "phones[+15551230000].sip_user_password"
        assert any(ord(c) < 32 or ord(c) == 127 for c in password) or password != password.strip()
        return
    trunk_fuzz.check_rendered("phone.password", password, files)


def test_spliced_examples_include_accepted_nasty_values() -> None:
    """The strategy must reach accepted values with ';', '\\' or '>' in them, else it proves little."""
    accepted = []
    for value in ("se;cr#et[x]", ">starts-with-gt", "back\\;slash", "a;--b--;c"):
        files = trunk_fuzz.render_with("phone.password", value)
        trunk_fuzz.check_rendered("phone.password", value, files)
        accepted.append(value)
    files = trunk_fuzz.render_with("contact", "sip:wa.meta.vc;transport=tls")
    trunk_fuzz.check_rendered("contact", "sip:wa.meta.vc;transport=tls", files)
    assert len(accepted) == 4


def test_injection_attempts_are_refused_with_the_field_named() -> None:
    attempts = {
        "endpoint_name": "wa.meta.vc]\n[evil",
        "context": "from-meta\n#include /etc/passwd",
        "cert_file": "/etc/k.crt ; comment",
        "external_signaling_address": "pbx.example.com\nmatch=0.0.0.0/0",
        "fallback_dial": "PJSIP/100,60)\nexten => s,1,System(rm)",
        "local_net": ["10.0.0.0/8\nallow_reload=yes"],
    }
    for field, value in attempts.items():
        try:
            trunk.parse_trunk({field: value})
        except FieldError as exc:
            assert exc.field.startswith(field)
        else:
            raise AssertionError(f"{field}={value!r} was accepted")
