"""Compare what we rendered with what Asterisk really loaded (pure).

Asterisk answers "Module Reloaded" even when it rejected an object and kept the old one,
so after every reload we read the objects back (PJSIPShowEndpoint's *Detail events,
`dialplan show`) and compare them option by option with the parsed render. An option that
Asterisk does not report at all counts as a mismatch too: that is how a misspelt option
(which Asterisk only logs) is caught.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from thoth_pbx.features.trunk.conffile import ConfFile, Section

SECRET_OPTIONS = frozenset({"password", "md5_cred", "oauth_secret", "refresh_token"})
VERIFIED_TYPES = ("transport", "aor", "endpoint", "auth", "identify")
DETAIL_EVENTS = {
    "EndpointDetail": "endpoint",
    "AorDetail": "aor",
    "AuthDetail": "auth",
    "TransportDetail": "transport",
    "IdentifyDetail": "identify",
}
_NOT_OPTIONS = {
    "Event",
    "ActionID",
    "ObjectType",
    "ObjectName",
    "EndpointName",
    "content",
    "DeviceState",
    "ActiveChannels",
    "TotalContacts",
    "ContactsRegistered",
}
_SKIP = {"type", "disallow"}
_FIELD_NAMES = {"contact": "Contacts"}
_NETWORK_OPTIONS = {"match", "local_net", "permit", "deny", "contact_permit", "contact_deny"}
_LIST_OPTIONS = {"auth", "outbound_auth", "aors", "contact", "allow", "mailboxes"}
_MULTI_OPTIONS = _LIST_OPTIONS | _NETWORK_OPTIONS
_TRUE = {"yes", "true", "on", "1", "y", "t"}
_FALSE = {"no", "false", "off", "0", "n", "f"}

LiveKey = tuple[str, str]  # (object type, object name)
Live = dict[LiveKey, dict[str, str]]


@dataclass(frozen=True)
class Mismatch:
    """One object or option Asterisk did not take as rendered."""

    object_type: str
    object_name: str
    option: str | None  # None: the whole object is missing
    expected: str | None
    actual: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "object": f"{self.object_type} {self.object_name}",
            "option": self.option,
            "expected": self.expected,
            "actual": self.actual,
            "message": str(self),
        }

    def __str__(self) -> str:
        where = f"{self.object_type} {self.object_name}"
        if self.option is None:
            return f"{where}: not loaded by Asterisk (rejected or missing)"
        if self.actual is None and self.object_type == "context":
            return f"{where}: {self.option} ({self.expected}) is not in the live dialplan"
        if self.actual is None:
            return f"{where}: option {self.option} is unknown to Asterisk (misspelt or unsupported)"
        return f"{where}: {self.option} is {self.actual!r} in Asterisk, rendered {self.expected!r}"


def camel(option: str) -> str:
    """pjsip option name -> AMI field name: media_encryption -> MediaEncryption."""
    return _FIELD_NAMES.get(option) or "".join(part[:1].upper() + part[1:] for part in option.split("_"))


def live_objects(events: Iterable[Mapping[str, Any]]) -> Live:
    """Group PJSIPShowEndpoint events into {(type, name): {Field: value}}."""
    live: Live = {}
    for event in events:
        kind = DETAIL_EVENTS.get(str(event.get("Event", "")))
        if kind is None:
            continue
        name = str(event.get("ObjectName", ""))
        live[(kind, name)] = {k: str(val) for k, val in event.items() if k not in _NOT_OPTIONS}
    return live


def intent_sections(conf: ConfFile) -> tuple[list[Section], list[Section]]:
    """(sections we can verify, sections of other types we cannot)."""
    verifiable = [s for s in conf.sections if not s.template and s.type in VERIFIED_TYPES]
    other = [s for s in conf.sections if not s.template and s.type not in VERIFIED_TYPES]
    return verifiable, other


def endpoint_names(conf: ConfFile) -> list[str]:
    return [s.name for s in conf.sections if s.type == "endpoint" and not s.template]


def compare_pjsip(conf: ConfFile, live: Live) -> list[Mismatch]:
    mismatches: list[Mismatch] = []
    sections, _ = intent_sections(conf)
    for section in sections:
        kind = str(section.type)
        fields = live.get((kind, section.name))
        if fields is None:
            mismatches.append(Mismatch(kind, section.name, None, None, None))
            continue
        grouped: dict[str, list[str]] = {}
        for option in section.options:
            if option.key not in _SKIP:
                grouped.setdefault(option.key, []).append(option.value)
        full_codec_list = "all" in section.values("disallow")
        for key, values in grouped.items():
            actual = fields.get(camel(key))
            secret = key in SECRET_OPTIONS
            # list options accumulate over repeated lines; a scalar set twice must have
            # taken every value (else the first one was refused and the object kept old)
            wanted = [",".join(values)] if key in _MULTI_OPTIONS else values
            for expected in wanted:
                shown_expected = "***" if secret else expected
                if actual is None:
                    mismatches.append(Mismatch(kind, section.name, key, shown_expected, None))
                    break
                if not same_value(key, expected, actual, exact_codecs=full_codec_list):
                    mismatches.append(Mismatch(kind, section.name, key, shown_expected, "***" if secret else actual))
                    break
    return mismatches


def same_value(key: str, expected: str, actual: str, *, exact_codecs: bool = True) -> bool:
    if expected == actual:
        return True
    if key == "allow":
        want = {c.strip().lower() for c in expected.split(",") if c.strip()}
        have = {c.strip().lower() for c in actual.strip("()").split("|") if c.strip()}
        return want == have if exact_codecs else want <= have
    if key in _NETWORK_OPTIONS:
        return _networks(expected) == _networks(actual) and _networks(expected) is not None
    if key in _LIST_OPTIONS:
        return _items(expected, key) == _items(actual, key)
    if key.startswith("tos"):
        return _tos(expected) == _tos(actual)
    exp, act = expected.strip().lower(), actual.strip().lower()
    if exp == act:
        return True
    if (exp in _TRUE and act in _TRUE) or (exp in _FALSE and act in _FALSE):
        return True
    try:
        return float(exp) == float(act)
    except ValueError:
        return False


def _items(text: str, key: str) -> set[str]:
    items = set()
    for item in text.split(","):
        item = item.strip()
        if key == "contact" and "/" in item and not item.startswith("sip"):
            item = item.split("/", 1)[1]  # AMI shows "aor/sip:host"
        if item:
            items.add(item)
    return items


def _networks(text: str) -> frozenset[Any] | None:
    try:
        return frozenset(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError:
        return None


def _tos(text: str) -> int | None:
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    if text.startswith("0x"):
        return int(text, 16)
    if re.fullmatch(r"cs[0-7]", text):
        return int(text[2]) * 8 << 2
    if re.fullmatch(r"af[1-4][1-3]", text):
        return (int(text[2]) * 8 + int(text[3]) * 2) << 2
    if text == "ef":
        return 46 << 2
    return None


# ------------------------------------------------------------------ dialplan

DialplanEntry = tuple[str, int, str | None, str]  # (extension, priority, label, app(data))

_PRIORITY = re.compile(r"(?P<prio>\d+|n|next|s|same)(?:\((?P<label>[^)]*)\))?", re.IGNORECASE)
_SHOW_LINE = re.compile(
    r"^\s*(?:'(?P<ext>[^']*)'\s*=>)?\s*(?:\[(?P<label>[^\]]+)\])?\s*(?P<prio>\d+)\.\s(?P<app>.*?)\s+\[(?P<src>[^\]]*)\]\s*$"
)


def _normalise_app(app: str) -> str:
    app = app.strip()
    return app if "(" in app else f"{app}()"


def dialplan_intent(conf: ConfFile) -> dict[str, list[DialplanEntry]]:
    """Contexts of an extensions.conf text, with `same`/`n` resolved to numbers."""
    contexts: dict[str, list[DialplanEntry]] = {}
    for section in conf.sections:
        if section.name.lower() in ("general", "globals") or section.template:
            continue
        entries = contexts.setdefault(section.name, [])
        last_ext, last_prio = None, 0
        for option in section.options:
            if option.key not in ("exten", "same"):
                continue
            parts = (
                option.value.split(",", 2) if option.key == "exten" else [last_ext or "", *option.value.split(",", 1)]
            )
            if len(parts) < 3:
                continue
            ext, prio_text, app = parts[0].strip(), parts[1].strip(), parts[2]
            match = _PRIORITY.fullmatch(prio_text)
            if match is None or prio_text.lower() == "hint":
                continue
            raw = match.group("prio").lower()
            prio = last_prio + 1 if raw in ("n", "next") else (last_prio if raw in ("s", "same") else int(raw))
            entries.append((ext, prio, match.group("label"), _normalise_app(app)))
            last_ext, last_prio = ext, prio
    return contexts


def parse_dialplan_show(output: str) -> list[DialplanEntry]:
    entries: list[DialplanEntry] = []
    ext = None
    for line in output.splitlines():
        match = _SHOW_LINE.match(line)
        if match is None:
            continue
        if match.group("ext") is not None:
            ext = match.group("ext")
        if ext is None:
            continue
        entries.append((ext, int(match.group("prio")), match.group("label"), _normalise_app(match.group("app"))))
    return entries


def compare_dialplan(intent: Mapping[str, list[DialplanEntry]], shown: Mapping[str, str]) -> list[Mismatch]:
    mismatches: list[Mismatch] = []
    for context, entries in intent.items():
        live = {(e, p): (label, app) for e, p, label, app in parse_dialplan_show(shown.get(context, ""))}
        if entries and not live:
            mismatches.append(Mismatch("context", context, None, None, None))
            continue
        for ext, prio, label, app in entries:
            got = live.get((ext, prio))
            option = f"{ext},{prio}"
            if got is None:
                mismatches.append(Mismatch("context", context, option, app, None))
            elif got != (label, app):
                want = f"{app} [{label}]" if label else app
                have = f"{got[1]} [{got[0]}]" if got[0] else got[1]
                mismatches.append(Mismatch("context", context, option, want, have))
    return mismatches
