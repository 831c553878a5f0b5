from __future__ import annotations

import pytest

from thoth_pbx.core import validation as v
from thoth_pbx.core.validation import FieldError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("+14155550123", "+14155550123"),
        ("7 999 123-45-67", "+79991234567"),
        ("0049301234567", "+49301234567"),
        (79991234567, "+79991234567"),
    ],
)
def test_e164_normalises(raw: object, clean: str) -> None:
    assert v.e164("number", raw) == clean


@pytest.mark.parametrize("raw", ["", "+0123456789", "+12", "+1415555012345678", "12ab34567", None, True])
def test_e164_rejects(raw: object) -> None:
    with pytest.raises(FieldError) as err:
        v.e164("number", raw)
    assert err.value.field == "number"


@pytest.mark.parametrize("raw", ["pbx.example.com", "PBX.Example.COM.", "a-b.c"])
def test_hostname_ok(raw: str) -> None:
    assert v.hostname("h", raw) == raw.lower().rstrip(".")


@pytest.mark.parametrize("raw", ["-bad.com", "a..b", "x" * 64 + ".com", "1.2.3.4", "a b", "a\nb", "ex_ample.com"])
def test_hostname_rejects(raw: str) -> None:
    with pytest.raises(FieldError):
        v.hostname("h", raw)


def test_text_refuses_line_breaks_and_digits_id() -> None:
    with pytest.raises(FieldError, match="control"):
        v.text("name", "a\nb")
    assert v.digits_id("phone_number_id", 123) == "123"
    with pytest.raises(FieldError, match="digits"):
        v.digits_id("phone_number_id", "12a")
    with pytest.raises(FieldError, match="65535"):
        v.port("sip_port", 70000)
