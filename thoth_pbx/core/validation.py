"""Field validators shared by the admin API, the CLI and the config renderers (pure).

Each validator takes the field name and a raw value, returns the clean value, or raises
`FieldError` naming the field, so every caller reports bad input the same way.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, TypeGuard


class FieldError(ValueError):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}")

    def as_json(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ASCII only: Python's \d and str.isdigit() also accept Arabic-Indic, fullwidth and other
# digits, which must never reach a dial string, a PJSIP section name or Bitrix24.
_ASCII_INTEGER = re.compile(r"-?[0-9]+")


def ascii_digits(value: str) -> bool:
    """True for a non-empty run of 0-9 (str.isdigit() would also accept '٣' or '１')."""
    return value.isascii() and value.isdigit()


def text(field: str, value: Any, *, max_len: int = 200, min_len: int = 1) -> str:
    if not isinstance(value, str):
        raise FieldError(field, "must be a string")
    cleaned: str = value.strip()
    if len(cleaned) < min_len:
        raise FieldError(field, "must not be empty" if min_len == 1 else f"must be at least {min_len} characters")
    if len(cleaned) > max_len:
        raise FieldError(field, f"must be at most {max_len} characters")
    if _CONTROL.search(cleaned):
        raise FieldError(field, "must not contain control characters or line breaks")
    return cleaned


def optional_text(field: str, value: Any, *, max_len: int = 200) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text(field, value, max_len=max_len)


def boolean(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise FieldError(field, "must be true or false")


def integer(field: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    number: int
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _ASCII_INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise FieldError(field, "must be a whole number")
    if minimum is not None and number < minimum:
        raise FieldError(field, f"must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise FieldError(field, f"must be at most {maximum}")
    return number


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_NOISE = re.compile(r"[\s\-().]")


def e164(field: str, value: Any) -> str:
    """Accept `+79991234567`, `7 999 123-45-67` or `79991234567`; store `+79991234567`."""
    if not isinstance(value, str) and not (isinstance(value, int) and not isinstance(value, bool)):
        raise FieldError(field, "must be a phone number in E.164 form, e.g. +14155550123")
    raw = _PHONE_NOISE.sub("", str(value).strip())
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    if not raw.startswith("+"):
        raw = "+" + raw
    if not _E164.fullmatch(raw):
        raise FieldError(field, f"{value!r} is not an E.164 number (+ country code and 7 to 15 digits)")
    return raw


def digits_id(field: str, value: Any, *, max_len: int = 32) -> str:
    """Meta's numeric ids (phone_number_id, WABA id): digits only, kept as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not ascii_digits(value.strip()):
        raise FieldError(field, "must be a numeric id (digits 0-9 only)")
    digits: str = value.strip()
    if len(digits) > max_len:
        raise FieldError(field, f"must be at most {max_len} digits")
    return digits


_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def hostname(field: str, value: Any) -> str:
    """An RFC 1123 host name (letters, digits, hyphens; dot-separated labels)."""
    if not isinstance(value, str):
        raise FieldError(field, "must be a host name")
    host = value.strip().rstrip(".").lower()
    if not host or len(host) > 253:
        raise FieldError(field, "must be a host name of 1 to 253 characters")
    labels = host.split(".")
    if not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise FieldError(field, f"{value!r} is not a valid host name (RFC 1123)")
    if ascii_digits(labels[-1]):
        raise FieldError(field, f"{value!r} looks like an IP address, not a host name")
    return host


_SCOPE_ID = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # an interface name (IFNAMSIZ) or index


def ip_address(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError(field, "must be an IP address")
    text = value.strip()
    address, percent, scope = text.partition("%")
    if percent and not _SCOPE_ID.fullmatch(scope):
        # ipaddress accepts any text after '%'; it would reach config files verbatim
        raise FieldError(field, f"{value!r} has an IPv6 scope id that is not an interface name or number")
    if not address.isascii():
        raise FieldError(field, f"{value!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FieldError(field, f"{value!r} is not an IP address") from None


def port(field: str, value: Any) -> int:
    return integer(field, value, minimum=1, maximum=65535)


_EXTENSION = re.compile(r"[A-Za-z0-9_-]{1,32}")


def is_extension(value: object) -> TypeGuard[str]:
    """An Asterisk extension as admins type it: ASCII letters, digits, _ or -, at most 32."""
    return isinstance(value, str) and bool(_EXTENSION.fullmatch(value))


def extension(field: str, value: Any) -> str:
    """The one rule for operator extensions, whether typed by an admin or read from Bitrix24."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not is_extension(text):
        raise FieldError(field, "must be an extension (letters, digits, _ or -, at most 32)")
    return text


def json_body(raw: bytes | str) -> Any:
    """Parse a JSON body; every malformed one, deeply nested ones included (RecursionError in
    the parser), is a 400 naming `body`, never a 500."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FieldError("body", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise FieldError("body", "is nested too deeply") from None


def choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise FieldError(field, f"must be one of {', '.join(choices)}")
    return value
