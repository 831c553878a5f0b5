"""Typed telephony.externalCall.* and telephony.externalLine.* (docs: api-reference/telephony).

Requests are dataclasses whose `params()` give Bitrix's parameter names (so they can be
stored as outbox payloads); answers come back as dataclasses. Every function takes any
`Caller` (the REST client), so the call flow never builds Bitrix requests by hand.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# TYPE values of telephony.externalCall.register
OUTGOING, INCOMING, INCOMING_REDIRECTED, CALLBACK, INFORMATIONAL = 1, 2, 3, 4, 5


class Caller(Protocol):
    """What the wrappers need from the REST client (rest.BitrixClient)."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *, batchable: bool = True) -> Any: ...

    async def call_reply(
        self, method: str, params: Mapping[str, Any] | None = None, *, batchable: bool = True
    ) -> Any: ...


def line_number_for(e164: str) -> str:
    """The external line NUMBER (and LINE_NUMBER) we use for a WhatsApp number: its digits."""
    return re.sub(r"\D", "", e164)


def _with_set(params: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """`params` plus the optional parameters that have a value (Bitrix applies its defaults)."""
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def _user(user_id: int | None, user_phone_inner: str | None) -> dict[str, Any]:
    if user_id is None and not user_phone_inner:
        raise ValueError("USER_ID or USER_PHONE_INNER is required")
    return {"USER_ID": user_id} if user_id is not None else {"USER_PHONE_INNER": user_phone_inner}


@dataclass(frozen=True)
class RegisterCall:
    phone_number: str
    type: int
    external_call_id: str  # unique per physical call (Asterisk linkedid): keeps Bitrix's 30-min dedup honest
    user_id: int | None = None
    user_phone_inner: str | None = None
    line_number: str | None = None
    call_start_date: dt.datetime | None = None
    crm_create: bool = False
    show: bool = True
    add_to_chat: bool = True
    crm_source: str | None = None
    crm_entity_type: str | None = None
    crm_entity_id: int | None = None

    def params(self) -> dict[str, Any]:
        if self.type not in (1, 2, 3, 4, 5):
            raise ValueError(f"TYPE must be 1..5, got {self.type}")
        if self.call_start_date is not None and self.call_start_date.tzinfo is None:
            raise ValueError("call_start_date needs a timezone")
        out: dict[str, Any] = {
            **_user(self.user_id, self.user_phone_inner),
            "PHONE_NUMBER": self.phone_number,
            "TYPE": self.type,
            "EXTERNAL_CALL_ID": self.external_call_id,
            "CRM_CREATE": int(self.crm_create),
            "SHOW": int(self.show),
            "ADD_TO_CHAT": int(self.add_to_chat),
        }
        return _with_set(
            out,
            LINE_NUMBER=self.line_number,
            CALL_START_DATE=self.call_start_date.isoformat(timespec="seconds") if self.call_start_date else None,
            CRM_SOURCE=self.crm_source,
            CRM_ENTITY_TYPE=self.crm_entity_type,
            CRM_ENTITY_ID=self.crm_entity_id,
        )


@dataclass(frozen=True)
class RegisteredCall:
    call_id: str
    crm_entity_type: str | None
    crm_entity_id: int | None
    crm_created_lead: int | None
    crm_created_entities: list[dict[str, Any]] = field(default_factory=list)
    lead_creation_error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the answer as Bitrix gave it

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> RegisteredCall:
        if not isinstance(result, Mapping) or not result.get("CALL_ID"):
            raise ValueError(f"register answered without CALL_ID: {result!r}")
        return cls(
            raw=dict(result),
            call_id=str(result["CALL_ID"]),
            crm_entity_type=result.get("CRM_ENTITY_TYPE") or None,
            crm_entity_id=_opt_int(result.get("CRM_ENTITY_ID")),
            crm_created_lead=_opt_int(result.get("CRM_CREATED_LEAD")),
            crm_created_entities=list(result.get("CRM_CREATED_ENTITIES") or []),
            lead_creation_error=result.get("LEAD_CREATION_ERROR"),
        )

    def created(self) -> set[tuple[str, int]]:
        """CRM entities this register created (CRM_CREATE): they belong to the call, not the caller's past."""
        made = {
            (str(e.get("ENTITY_TYPE")), int(e["ENTITY_ID"]))
            for e in self.crm_created_entities
            if isinstance(e, Mapping) and _opt_int(e.get("ENTITY_ID")) is not None
        }
        if self.crm_created_lead is not None:
            made.add(("LEAD", self.crm_created_lead))
        return made


@dataclass(frozen=True)
class FinishCall:
    """`call_id` may be left out when the outbox takes it from the chain's register result."""

    user_id: int | None = None
    user_phone_inner: str | None = None
    duration: int = 0
    status_code: str | None = None  # 200, 304, 603, 603-S, 486, ... (callflow.finish_status)
    add_to_chat: bool = True  # pass explicitly: the code treats a missing value as false
    failed_reason: str | None = None
    cost: float | None = None
    cost_currency: str | None = None
    vote: int | None = None
    call_id: str | None = None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **_user(self.user_id, self.user_phone_inner),
            "DURATION": max(0, int(self.duration)),
            "ADD_TO_CHAT": int(self.add_to_chat),
        }
        return _with_set(
            out,
            CALL_ID=self.call_id,
            STATUS_CODE=self.status_code,
            FAILED_REASON=self.failed_reason,
            COST=self.cost,
            COST_CURRENCY=self.cost_currency,
            VOTE=self.vote,
        )


@dataclass(frozen=True)
class FinishedCall:
    call_id: str
    statistic_id: int | None
    duration: int | None
    status_code: str | None
    crm_activity_id: int | None
    crm_entity_type: str | None
    crm_entity_id: int | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> FinishedCall:
        return cls(
            raw=dict(result),
            call_id=str(result.get("CALL_ID") or ""),
            statistic_id=_opt_int(result.get("ID")),
            duration=_opt_int(result.get("CALL_DURATION")),
            status_code=str(result["CALL_FAILED_CODE"]) if result.get("CALL_FAILED_CODE") is not None else None,
            crm_activity_id=_opt_int(result.get("CRM_ACTIVITY_ID")),
            crm_entity_type=result.get("CRM_ENTITY_TYPE") or None,
            crm_entity_id=_opt_int(result.get("CRM_ENTITY_ID")),
        )


@dataclass(frozen=True)
class CrmMatch:
    entity_type: str
    entity_id: int
    name: str
    assigned_by_id: int | None
    assigned_inner_phone: str | None


@dataclass(frozen=True)
class ExternalLine:
    number: str
    name: str
    crm_auto_create: bool


def _opt_int(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


async def register_call(caller: Caller, request: RegisterCall | Mapping[str, Any]) -> RegisteredCall:
    """`request` is a RegisterCall, or the parameters one built earlier (an outbox job sends the
    stored ones again, byte for byte: Bitrix de-duplicates identical registers)."""
    params = request.params() if isinstance(request, RegisterCall) else dict(request)
    return RegisteredCall.from_result(await caller.call("telephony.externalcall.register", params))


async def finish_call(caller: Caller, call_id: str, request: FinishCall | Mapping[str, Any]) -> FinishedCall:
    """`request` as for register_call; the answer is the finished call's record."""
    params = {**(request.params() if isinstance(request, FinishCall) else dict(request)), "CALL_ID": call_id}
    result = await caller.call("telephony.externalcall.finish", params)
    return FinishedCall.from_result(result if isinstance(result, Mapping) else {"CALL_ID": call_id, "result": result})


async def show_call(caller: Caller, call_id: str, user_ids: list[int] | int | None = None) -> bool:
    params: dict[str, Any] = {"CALL_ID": call_id}
    if user_ids is not None:
        params["USER_ID"] = user_ids
    return bool(await caller.call("telephony.externalcall.show", params))


async def hide_call(caller: Caller, call_id: str, user_ids: list[int] | int | None = None) -> bool:
    params: dict[str, Any] = {"CALL_ID": call_id}
    if user_ids is not None:
        params["USER_ID"] = user_ids
    return bool(await caller.call("telephony.externalcall.hide", params))


async def attach_record(
    caller: Caller, call_id: str, *, filename: str, content: bytes | None = None, record_url: str | None = None
) -> int | None:
    """After finish. Content goes base64 in one request (never inside a batch); returns FILE_ID."""
    if not filename.lower().endswith((".mp3", ".wav")):
        raise ValueError("Bitrix accepts only .mp3 or .wav records")
    params: dict[str, Any] = {"CALL_ID": call_id, "FILENAME": filename}
    if content is not None:
        params["FILE_CONTENT"] = base64.b64encode(content).decode("ascii")
    elif record_url:
        params["RECORD_URL"] = record_url
    else:
        raise ValueError("content or record_url is required")
    result = await caller.call("telephony.externalcall.attachRecord", params, batchable=False)
    return _opt_int(result.get("FILE_ID")) if isinstance(result, Mapping) else None


def known_before(matches: list[CrmMatch], registered: RegisteredCall) -> list[CrmMatch]:
    """The matches that existed before the call: a lead auto-created by its register is owned by
    the register's USER_ID, who is not the caller's manager."""
    created = registered.created()
    return [m for m in matches if (m.entity_type, m.entity_id) not in created]


async def search_crm(caller: Caller, phone_number: str) -> list[CrmMatch]:
    result = await caller.call("telephony.externalcall.searchCrmEntities", {"PHONE_NUMBER": phone_number})
    matches = []
    for item in result or []:
        owner = item.get("ASSIGNED_BY") or {}
        matches.append(
            CrmMatch(
                entity_type=str(item.get("CRM_ENTITY_TYPE")),
                entity_id=int(item.get("CRM_ENTITY_ID")),
                name=str(item.get("NAME") or ""),
                assigned_by_id=_opt_int(item.get("ASSIGNED_BY_ID")),
                assigned_inner_phone=owner.get("USER_PHONE_INNER") or None,
            )
        )
    return matches


async def add_line(caller: Caller, number: str, name: str, *, crm_auto_create: bool = True) -> int:
    result = await caller.call(
        "telephony.externalLine.add",
        {"NUMBER": number, "NAME": name, "CRM_AUTO_CREATE": "Y" if crm_auto_create else "N"},
    )
    return int(result["ID"])


async def get_lines(caller: Caller) -> list[ExternalLine]:
    result = await caller.call("telephony.externalLine.get")
    return [
        ExternalLine(str(line.get("NUMBER")), str(line.get("NAME") or ""), line.get("CRM_AUTO_CREATE") != "N")
        for line in result or []
    ]


async def update_line(
    caller: Caller, number: str, *, name: str | None = None, crm_auto_create: bool | None = None
) -> None:
    params: dict[str, Any] = {"NUMBER": number}
    if name is not None:
        params["NAME"] = name
    if crm_auto_create is not None:
        params["CRM_AUTO_CREATE"] = "Y" if crm_auto_create else "N"
    await caller.call("telephony.externalLine.update", params)


async def delete_line(caller: Caller, number: str) -> None:
    await caller.call("telephony.externalLine.delete", {"NUMBER": number})
