"""Pure decisions of the WhatsApp call flow: who to ring, and how a call ended.

No I/O here: the Stasis app (calls.py) feeds facts in and acts on what comes out, so every
rule is tested without Asterisk or Bitrix24.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from thoth_pbx.core.validation import FieldError, boolean, extension, integer

# Bitrix24 telephony.externalcall.finish STATUS_CODE values (fact sheet, bitrix24-rest.md)
ANSWERED = "200"
MISSED = "304"
CANCELLED = "603-S"
DECLINED = "603"
BUSY = "486"
UNAVAILABLE = "480"


class CallEnded(Exception):
    """The caller hung up: unwinds the call's task to its finish (raised while ringing)."""


@dataclass(frozen=True)
class Operator:
    """A Bitrix24 user reachable on an Asterisk extension."""

    extension: str
    user_id: int | None = None


@dataclass(frozen=True)
class RingStage:
    operators: tuple[Operator, ...]
    seconds: int


@dataclass(frozen=True)
class CallSettings:
    """Per-portal call settings (AppInstance.settings["calls"]); defaults are safe."""

    ring_group: tuple[Operator, ...] = ()
    responsible_first_seconds: int = 15
    group_ring_seconds: int = 30
    record: bool = False
    crm_create: bool = True
    # where the dialplan-free fallback goes when nobody is configured: Asterisk dial string
    operator_endpoint: str = "PJSIP/{extension}"
    default_user_id: int | None = None  # Bitrix user on register/finish when nobody answered
    # PHONE_NUMBER of a caller Meta gives no number for (docs/calls.md "Callers without a phone
    # number"): register requires one and documents no format, so a fixed all-zero number
    no_phone_number: str = "0000000000"

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any] | None, users: Mapping[str, int] | None = None, *, prefix: str = "calls"
    ) -> CallSettings:
        """Validate stored/TOML JSON; `users` maps extension -> Bitrix user id. FieldError names the key."""
        data = dict(data or {})
        users = users or {}
        unknown = set(data) - _CALL_KEYS
        if unknown:
            raise FieldError(
                f"{prefix}.{sorted(unknown)[0]}", f"unknown setting; expected one of {', '.join(sorted(_CALL_KEYS))}"
            )
        raw_group = data.get("ring_group", [])
        if not isinstance(raw_group, list):
            raise FieldError(f"{prefix}.ring_group", "must be a list of extensions")
        group = []
        for index, ext in enumerate(raw_group):
            text = extension(f"{prefix}.ring_group[{index}]", ext)
            group.append(Operator(text, users.get(text)))
        endpoint = data.get("operator_endpoint", "PJSIP/{extension}")
        if not isinstance(endpoint, str) or not _ENDPOINT.fullmatch(endpoint) or "{extension}" not in endpoint:
            raise FieldError(
                f"{prefix}.operator_endpoint", "must be a dial string with {extension}, e.g. PJSIP/{extension}"
            )
        return cls(
            ring_group=tuple(group),
            responsible_first_seconds=integer(
                f"{prefix}.responsible_first_seconds", data.get("responsible_first_seconds", 15), minimum=0, maximum=600
            ),
            group_ring_seconds=integer(
                f"{prefix}.group_ring_seconds", data.get("group_ring_seconds", 30), minimum=0, maximum=600
            ),
            record=boolean(f"{prefix}.record", data.get("record", False)),
            crm_create=boolean(f"{prefix}.crm_create", data.get("crm_create", True)),
            operator_endpoint=endpoint,
            no_phone_number=_no_phone_number(f"{prefix}.no_phone_number", data.get("no_phone_number", "0000000000")),
            default_user_id=(
                None
                if data.get("default_user_id") is None
                else integer(f"{prefix}.default_user_id", data["default_user_id"], minimum=1)
            ),
        )


_CALL_KEYS = {
    "ring_group",
    "responsible_first_seconds",
    "group_ring_seconds",
    "record",
    "crm_create",
    "operator_endpoint",
    "default_user_id",
    "no_phone_number",
}
_ENDPOINT = re.compile(r"(PJSIP|Local|SIP|IAX2)/[A-Za-z0-9_@{}.+-]{1,80}")


_PLACEHOLDER = re.compile(r"[0-9]{3,20}")


def _no_phone_number(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _PLACEHOLDER.fullmatch(value):
        raise FieldError(name, "must be 3 to 20 digits (the PHONE_NUMBER of callers without a number)")
    return value


def plan_route(responsible: Operator | None, settings: CallSettings) -> list[RingStage]:
    """Ring the CRM owner alone first, then everyone in the ring group at once."""
    stages: list[RingStage] = []
    if responsible is not None and settings.responsible_first_seconds > 0:
        stages.append(RingStage((responsible,), settings.responsible_first_seconds))
    group = tuple(dict.fromkeys(settings.ring_group))  # keep order, drop repeats
    if group and settings.group_ring_seconds > 0:
        if not (len(group) == 1 and stages and group[0].extension == stages[0].operators[0].extension):
            stages.append(RingStage(group, settings.group_ring_seconds))
    return stages


def finish_status(
    *,
    answered: bool,
    caller_hung_up_first: bool,
    dial_results: Iterable[str],
) -> str:
    """Map what happened to STATUS_CODE.

    `dial_results` are Asterisk DIALSTATUS-like words for every operator leg tried:
    ANSWER, NOANSWER, BUSY, CHANUNAVAIL, CONGESTION, CANCEL.
    """
    if answered:
        return ANSWERED
    if caller_hung_up_first:
        return CANCELLED
    results = [r.upper() for r in dial_results]
    if not results:
        return UNAVAILABLE  # nobody could be rung at all
    if "NOANSWER" in results or "CANCEL" in results:
        return MISSED
    if all(r == "CHANUNAVAIL" for r in results):
        return UNAVAILABLE
    if any(r == "BUSY" for r in results):
        return BUSY
    if all(r in ("CHANUNAVAIL", "CONGESTION") for r in results):
        return UNAVAILABLE
    return MISSED


_DIGITS = re.compile(r"[0-9]{6,15}")  # ASCII: \d would pass Arabic-Indic digits


def normalise_number(raw: str | None) -> str | None:
    """`+14155550123`, `14155550123` or `sip:+1415...@host` -> `+14155550123`; None if not a number."""
    if not raw:
        return None
    text = raw.strip()
    if text.startswith("sip:"):
        text = text[4:].split("@", 1)[0]
    text = text.split(";", 1)[0]
    digits = text[1:] if text.startswith("+") else text
    if not _DIGITS.fullmatch(digits):
        return None
    return "+" + digits


def talk_seconds(answered_at: dt.datetime | None, ended_at: dt.datetime) -> int:
    """DURATION for finish: talk time only, rounded to the nearest second."""
    if answered_at is None:
        return 0
    return max(0, round((ended_at - answered_at).total_seconds()))


def dial_result_from_cause(cause: int | None) -> str:
    """Asterisk hangup cause of an operator leg -> DIALSTATUS word."""
    mapping = {
        17: "BUSY",
        18: "NOANSWER",
        19: "NOANSWER",
        20: "CHANUNAVAIL",
        21: "BUSY",
        3: "CHANUNAVAIL",
        27: "CHANUNAVAIL",
        34: "CONGESTION",
        38: "CHANUNAVAIL",
        16: "NOANSWER",
    }
    return mapping.get(cause or 0, "CHANUNAVAIL")


@dataclass
class Leg:
    """One operator leg being rung."""

    operator: Operator
    channel_id: str
    result: str | None = None  # DIALSTATUS once known
    cause: int | None = None  # Asterisk hangup cause, when the leg ended by itself


@dataclass
class CallState:
    """In-memory state of one call while it lives in our Stasis app."""

    call_id: int
    channel_id: str
    linkedid: str
    caller: str
    called: str
    started_at: dt.datetime
    answered_at: dt.datetime | None = None
    answered_by: Operator | None = None
    legs: dict[str, Leg] = field(default_factory=dict)
    caller_hung_up: bool = False
    bridge_id: str | None = None
    recording: str | None = None
    recorder_channel: str | None = None  # the snoop channel the recording is made on

    def dial_results(self) -> list[str]:
        return [leg.result or "NOANSWER" for leg in self.legs.values()]
