"""Pure rules of click-to-call: the settings, what a permission answer means, and how each
way a call-back can end becomes a Bitrix24 STATUS_CODE with a message that says why.

Bitrix24 STATUS_CODE values (telephony.externalCall.finish, bitrix24-rest.md §1): 200
success, 304 missed, 603 declined, 603-S cancelled, 403 forbidden, 486 busy, 480 temporarily
unavailable, 423 blocked. Meta's refusals (meta-whatsapp-cloud-api.md §2, §3): SIP 403 (no
approved call permission, From host, limits), 480 unreachable / no answer, 486 declined, 487
cancelled; Graph 138006 no permission, 138009 permission request limit, 138012 daily
connected-call limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from thoth_pbx.core.validation import FieldError, boolean, integer, text

ANSWERED = "200"


@dataclass(frozen=True)
class Outcome:
    """How a click-to-call ended: STATUS_CODE and the reason shown in Bitrix24 (FAILED_REASON)."""

    status_code: str
    reason: str | None = None


@dataclass(frozen=True)
class CallbackSettings:
    """Per-portal `settings["callback"]`; the defaults never call anyone unasked."""

    operator_endpoint: str = "PJSIP/{extension}"
    operator_ring_seconds: int = 30
    customer_ring_seconds: int = 45
    record: bool = False
    auto_call_back: bool = False  # ring the operator again once the customer grants permission
    request_text: str = "We would like to call you on WhatsApp. May we?"
    template_name: str | None = None  # approved template with the call_permission_request component
    template_language: str = "en_US"

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, prefix: str = "callback") -> CallbackSettings:
        data = dict(data or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise FieldError(
                f"{prefix}.{sorted(unknown)[0]}", f"unknown setting; expected one of {', '.join(sorted(known))}"
            )
        endpoint = data.get("operator_endpoint", cls.operator_endpoint)
        if not isinstance(endpoint, str) or "{extension}" not in endpoint or not _ENDPOINT.fullmatch(endpoint):
            raise FieldError(
                f"{prefix}.operator_endpoint", "must be a dial string with {extension}, e.g. PJSIP/{extension}"
            )
        name = data.get("template_name")
        return cls(
            operator_endpoint=endpoint,
            operator_ring_seconds=integer(
                f"{prefix}.operator_ring_seconds", data.get("operator_ring_seconds", 30), minimum=5, maximum=300
            ),
            customer_ring_seconds=integer(
                f"{prefix}.customer_ring_seconds", data.get("customer_ring_seconds", 45), minimum=5, maximum=120
            ),
            record=boolean(f"{prefix}.record", data.get("record", False)),
            auto_call_back=boolean(f"{prefix}.auto_call_back", data.get("auto_call_back", False)),
            request_text=text(f"{prefix}.request_text", data.get("request_text", cls.request_text), max_len=1024),
            template_name=None if name in (None, "") else text(f"{prefix}.template_name", name, max_len=512),
            template_language=text(f"{prefix}.template_language", data.get("template_language", "en_US"), max_len=16),
        )


_ENDPOINT = re.compile(r"(PJSIP|Local|SIP|IAX2)/[A-Za-z0-9_@{}.+-]{1,80}")


def may_call(status: str, can_call: bool) -> bool:
    """Dial only with a granted permission whose start_call action is allowed (limits not hit)."""
    return status in ("temporary", "permanent") and can_call


def no_permission(requested: bool, how: str | None) -> Outcome:
    """The call-back did not dial: the customer has no permission (yet)."""
    if requested:
        where = "an interactive message" if how == "interactive" else "the permission template"
        return Outcome("403", f"No WhatsApp call permission from the customer: permission asked with {where}")
    return Outcome("403", "No WhatsApp call permission from the customer, and it cannot be asked now")


CALL_PERMISSION_REQUEST = "CALL_PERMISSION_REQUEST"  # the template component that asks for a call permission


class SyncedTemplate(Protocol):
    """A message template as thoth-pbx synchronised it from Graph (the messaging feature's
    listing, handed in by app.py): only what the permission template check reads."""

    @property
    def name(self) -> str: ...

    @property
    def language(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def components(self) -> Sequence[Mapping[str, Any]]: ...


def template_refusal(templates: Sequence[SyncedTemplate] | None, name: str, language: str) -> Outcome | None:
    """Why the configured permission template must not go (None: send it). Meta makes a template a
    call permission request only with the `call_permission_request` component: a plain template
    would reach the customer with nothing to grant, so it is never sent in its place. Templates
    never synchronised (None): not known here, so it goes as configured (Meta refuses an unknown
    or unapproved one with 132001). The component type is matched in any case: Meta's examples
    write it lower-case, its listings write types upper-case."""
    if templates is None:
        return None
    which = f"the permission template {name}+{language}"
    found = next((t for t in templates if t.name == name and t.language == language), None)
    if found is None:
        return Outcome("403", f"Permission not asked: {which} is not among this WhatsApp account's templates")
    if found.status.upper() != "APPROVED":
        return Outcome("403", f"Permission not asked: {which} is {found.status.upper()}, not APPROVED")
    if not any(str(c.get("type") or "").upper() == CALL_PERMISSION_REQUEST for c in found.components):
        return Outcome("403", f"Permission not asked: {which} has no call permission request component")
    return None


_GRAPH = {
    138006: Outcome("403", "WhatsApp: no approved call permission for this customer (138006)"),
    138009: Outcome("423", "WhatsApp: the call permission request limit is reached, 1 a day and 2 a week (138009)"),
    138012: Outcome("423", "WhatsApp: 100 connected calls to this customer in 24 hours reached (138012)"),
}


def graph_refusal(code: int | None, message: str) -> Outcome:
    return _GRAPH.get(code or 0) or Outcome("OTHER", f"WhatsApp refused: {message[:200]} ({code})")


_SIP = {
    403: Outcome("403", "WhatsApp refused the call (SIP 403): no approved permission, limit, or From host"),
    401: Outcome("403", "WhatsApp refused our digest credentials (SIP 401): fetch the number's SIP password again"),
    407: Outcome("403", "WhatsApp refused our digest credentials (SIP 407): fetch the number's SIP password again"),
    404: Outcome("404", "WhatsApp: invalid number (SIP 404)"),
    480: Outcome("480", "The customer is unreachable or did not answer (SIP 480)"),
    486: Outcome("603", "The customer declined the call (SIP 486)"),
    487: Outcome("603-S", "The call was cancelled before the customer answered (SIP 487)"),
    408: Outcome("480", "WhatsApp: no media, the call timed out (SIP 408)"),
    503: Outcome("503", "WhatsApp: internal error (SIP 503)"),
}

# Asterisk hangup cause (Q.850) of our customer leg -> the SIP answer it stands for (res_pjsip's
# mapping: 403/603 -> 21, 404 -> 1, 408 -> 18, 480 -> 19, 486 -> 17, 503 -> 34)
_CAUSE_TO_SIP = {21: 403, 1: 404, 3: 404, 18: 408, 19: 480, 20: 480, 17: 486, 34: 503, 38: 503, 127: 487}


def sip_status(tech_cause: Any, cause: int | None) -> int | None:
    """The SIP final response of the customer leg: Asterisk's tech_cause when it gives one, else
    what the Q.850 cause stands for."""
    if isinstance(tech_cause, int) and 300 <= tech_cause <= 699:
        return tech_cause
    if isinstance(tech_cause, str) and tech_cause.isdigit() and 300 <= int(tech_cause) <= 699:
        return int(tech_cause)
    return _CAUSE_TO_SIP.get(cause or 0)


def customer_refusal(sip: int | None, *, we_cancelled: bool) -> Outcome:
    if we_cancelled:
        return Outcome("304", "The customer did not answer in time")
    if sip is None:
        return Outcome("480", "The WhatsApp leg failed without a SIP answer")
    return _SIP.get(sip) or Outcome("OTHER", f"WhatsApp answered SIP {sip}")


def operator_missed(result: str) -> Outcome:
    """The operator's own phone did not take the call: nobody was dialled."""
    if result == "BUSY":
        return Outcome("486", "The operator's phone is busy")
    if result == "CHANUNAVAIL":
        return Outcome("480", "The operator's phone is unavailable")
    return Outcome("304", "The operator did not answer their phone")
