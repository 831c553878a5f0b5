"""Typed models of Meta's webhook payloads, and their flattening into inbox events (pure).

A delivery is `{"object", "entry": [{"id", "changes": [{"field", "value"}]}]}`. Each
message, status and call event inside a change becomes one `InboxEvent` with a dedup key
(Meta retries for days and sends duplicates): message id, status id + status, call id +
event. Anything we do not model is kept: unknown keys go to `extra`, unknown fields and
events are stored whole; nothing Meta sent is dropped.

Only the envelope is validated strictly (`PayloadError` -> HTTP 400): a delivery whose
envelope is wrong is garbage, not a new Meta feature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from thoth_pbx.clients.meta.contents import Content, MessageType, Text, parse_content
from thoth_pbx.core.shapes import sub, sub_or_none

DEDUP_KEY_MAX = 300


class PayloadError(ValueError):
    """The delivery is not a Meta webhook envelope; `path` says where (e.g. entry[0].changes)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


# The keys each item model knows; anything else is kept in `extra` (and noticed once).
MESSAGE_KEYS = ("id", "from", "timestamp", "type", "context", "errors")  # + the key named by type
STATUS_KEYS = ("id", "status", "timestamp", "recipient_id", "type", "biz_opaque_callback_data", "pricing", "errors")
CALL_KEYS = (
    "id",
    "event",
    "from",
    "to",
    "direction",
    "timestamp",
    "session",
    "status",
    "start_time",
    "end_time",
    "duration",
    "biz_opaque_callback_data",
    "errors",
)


def _split(raw: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in known}


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Metadata:
    display_phone_number: str | None
    phone_number_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> Metadata:
        raw = raw if isinstance(raw, dict) else {}
        return cls(
            _str(raw.get("display_phone_number")),
            _str(raw.get("phone_number_id")),
            _split(raw, ("display_phone_number", "phone_number_id")),
        )


@dataclass(frozen=True)
class Contact:
    wa_id: str | None
    name: str | None
    user_id: str | None  # BSUID (2026)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Contact:
        profile = sub(raw, "profile")
        return cls(
            _str(raw.get("wa_id")),
            _str(profile.get("name")),
            _str(raw.get("user_id")),
            _split(raw, ("wa_id", "user_id")) | ({"profile": profile} if len(profile) > 1 else {}),
        )


@dataclass(frozen=True)
class ErrorInfo:
    """An error Meta reports inside a webhook (`errors[]` of a value, message or status)."""

    code: int | None
    title: str | None
    message: str | None
    details: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ErrorInfo:
        data = sub(raw, "error_data")
        code = raw.get("code")
        return cls(
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            _str(raw.get("title")),
            _str(raw.get("message")),
            _str(data.get("details")),
            _split(raw, ("code", "title", "message", "error_data")),
        )


@dataclass(frozen=True)
class Message:
    """An inbound message; `content` is the part named by `type` (e.g. text -> {"body": ...})."""

    id: str
    from_: str | None
    timestamp: str | None
    type: str | None
    content: Any
    context: dict[str, Any] | None
    errors: list[ErrorInfo]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str | None:
        body = self.body
        return body.body if isinstance(body, Text) else None

    @property
    def kind(self) -> MessageType:
        return MessageType(self.type or "unknown")

    @property
    def body(self) -> Content:
        """The typed content (clients/meta/contents.py); Unknown for types Meta adds later."""
        return parse_content(self.type, self.content)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Message:
        kind = _str(raw.get("type"))
        return cls(
            id=_str(raw.get("id")) or "",
            from_=_str(raw.get("from")),
            timestamp=_str(raw.get("timestamp")),
            type=kind,
            content=raw.get(kind) if kind else None,
            context=sub_or_none(raw, "context"),
            errors=[ErrorInfo.from_dict(e) for e in _dicts(raw.get("errors"))],
            extra=_split(raw, (*MESSAGE_KEYS, kind or "type")),
        )


@dataclass(frozen=True)
class Status:
    """A delivery status of a sent message, or (type "call") of a business-initiated call."""

    id: str
    status: str | None  # sent|delivered|read|failed, or RINGING|ACCEPTED|REJECTED for calls
    timestamp: str | None
    recipient_id: str | None
    type: str | None
    biz_opaque_callback_data: str | None
    pricing: dict[str, Any] | None
    errors: list[ErrorInfo]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Status:
        return cls(
            id=_str(raw.get("id")) or "",
            status=_str(raw.get("status")),
            timestamp=_str(raw.get("timestamp")),
            recipient_id=_str(raw.get("recipient_id")),
            type=_str(raw.get("type")),
            biz_opaque_callback_data=_str(raw.get("biz_opaque_callback_data")),
            pricing=sub_or_none(raw, "pricing"),
            errors=[ErrorInfo.from_dict(e) for e in _dicts(raw.get("errors"))],
            extra=_split(raw, STATUS_KEYS),
        )


@dataclass(frozen=True)
class CallEvent:
    """A `calls[]` item: connect (with SDP), terminate (with outcome) or any newer event."""

    id: str
    event: str | None
    from_: str | None
    to: str | None
    direction: str | None  # USER_INITIATED | BUSINESS_INITIATED
    timestamp: str | None
    sdp_type: str | None
    sdp: str | None
    status: str | None  # terminate: COMPLETED | FAILED (compare case-insensitively)
    start_time: str | None
    end_time: str | None
    duration: int | None
    biz_opaque_callback_data: str | None
    errors: list[ErrorInfo]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return (self.status or "").upper() == "FAILED"

    @classmethod
    def from_dict(cls, raw: dict[str, Any], value_errors: list[dict[str, Any]] | None = None) -> CallEvent:
        session = sub(raw, "session")
        duration = raw.get("duration")
        if isinstance(duration, str) and duration.isdigit():
            duration = int(duration)
        errors = _dicts(raw.get("errors")) + (value_errors or [])  # samples put errors at value level
        return cls(
            id=_str(raw.get("id")) or "",
            event=_str(raw.get("event")),
            from_=_str(raw.get("from")),
            to=_str(raw.get("to")),
            direction=_str(raw.get("direction")),
            timestamp=_str(raw.get("timestamp")),
            sdp_type=_str(session.get("sdp_type")),
            sdp=_str(session.get("sdp")),
            status=_str(raw.get("status")),
            start_time=_str(raw.get("start_time")),
            end_time=_str(raw.get("end_time")),
            duration=duration if isinstance(duration, int) and not isinstance(duration, bool) else None,
            biz_opaque_callback_data=_str(raw.get("biz_opaque_callback_data")),
            errors=[ErrorInfo.from_dict(e) for e in errors],
            extra=_split(raw, CALL_KEYS),
        )


@dataclass(frozen=True)
class AccountSettingsUpdate:
    """`account_settings_update`: Meta changed calling settings (status, sip.status, ...)."""

    values: dict[str, Any]

    @property
    def calling(self) -> dict[str, Any]:
        calling = self.values.get("calling")
        return calling if isinstance(calling, dict) else {}


@dataclass(frozen=True)
class UnknownChange:
    """A field or event we do not model yet; kept whole so it can be replayed later."""

    field: str
    value: Any


Model = Message | Status | CallEvent | AccountSettingsUpdate | UnknownChange


@dataclass(frozen=True)
class InboxEvent:
    """One storable unit: what goes into one `webhook_inbox` row."""

    dedup_key: str
    field: str
    kind: str
    waba_id: str | None
    phone_number_id: str | None
    payload: dict[str, Any]
    known: bool = True  # False for unknown fields/events/keys (logged once)
    entry_time: int | None = None  # the entry's `time` (Unix seconds: when Meta triggered it)

    def model(self) -> Model:
        return model_of(self.kind, self.payload)


# ------------------------------------------------------------------ envelope


def validate_envelope(doc: Any) -> list[tuple[str | None, int | None, str, dict[str, Any]]]:
    """Check the envelope; return (entry id, entry time, field, value) for every change, in order."""
    if not isinstance(doc, dict):
        raise PayloadError("body", "must be a JSON object")
    if not isinstance(doc.get("object"), str):
        raise PayloadError("object", "must be a string (whatsapp_business_account)")
    entries = doc.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("entry", "must be a list")
    changes: list[tuple[str | None, int | None, str, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PayloadError(f"entry[{i}]", "must be an object")
        entry_time = _entry_time(entry.get("time"), f"entry[{i}].time")
        entry_changes = entry.get("changes")
        if not isinstance(entry_changes, list):
            raise PayloadError(f"entry[{i}].changes", "must be a list")
        for j, change in enumerate(entry_changes):
            path = f"entry[{i}].changes[{j}]"
            if not isinstance(change, dict):
                raise PayloadError(path, "must be an object")
            if not isinstance(change.get("field"), str) or not change["field"]:
                raise PayloadError(f"{path}.field", "must be a non-empty string")
            if not isinstance(change.get("value"), dict):
                raise PayloadError(f"{path}.value", "must be an object")
            changes.append((_str(entry.get("id")), entry_time, change["field"], change["value"]))
    return changes


MAX_ENTRY_TIME = 253402300799  # 9999-12-31T23:59:59Z: the largest time a datetime holds


def _entry_time(value: Any, path: str) -> int | None:
    """`entry.time`: Unix seconds, an integer in Meta's references (`"time": 1739321024`);
    a string of digits is taken too. Absent on `messages` and `calls` entries."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ENTRY_TIME:
        raise PayloadError(path, "must be a Unix timestamp in seconds")
    return value


def canonical_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _key(prefix: str, *ids: str) -> str:
    key = ":".join((prefix, *ids))
    if len(key) > DEDUP_KEY_MAX:
        key = f"{prefix}:sha256:{canonical_hash(ids)}"
    return key


# Keys of a change value that are context for its items, not items themselves.
_CONTEXT_KEYS = ("messaging_product", "metadata", "contacts", "errors")
_ITEM_KEYS = {"messages": ("messages", "statuses"), "calls": ("calls", "statuses")}


def events_of(doc: Any) -> list[InboxEvent]:
    """Flatten a delivery into inbox events (validates the envelope first)."""
    events: list[InboxEvent] = []
    for waba_id, entry_time, field_name, value in validate_envelope(doc):
        events.extend(_change_events(waba_id, entry_time, field_name, value))
    return events


def _change_events(
    waba_id: str | None, entry_time: int | None, field_name: str, value: dict[str, Any]
) -> Iterator[InboxEvent]:
    metadata = sub(value, "metadata")
    pnid = _str(metadata.get("phone_number_id"))
    item_keys = _ITEM_KEYS.get(field_name, ())
    context = {k: value[k] for k in _CONTEXT_KEYS if k in value}
    extra = {k: v for k, v in value.items() if k not in _CONTEXT_KEYS and k not in item_keys}
    produced = False
    for list_key in item_keys:
        for item in _dicts(value.get(list_key)):
            produced = True
            yield _item_event(waba_id, entry_time, field_name, list_key, item, context, extra, pnid)
    if produced:
        return
    # A change without items we model: account settings, an errors-only value, a new field.
    # Nothing in it identifies the delivery but its content and the entry's time: the same
    # setting switched off and on again is the same value twice, at two times (a retry of one
    # delivery keeps its time).
    if field_name in ("account_settings_update", "message_template_status_update"):
        kind, known = field_name, True
    elif field_name in _ITEM_KEYS and "errors" in value and set(value) <= set(_CONTEXT_KEYS):
        kind, known = f"{field_name}.errors", True
    else:
        kind, known = f"unknown.{field_name}", False
    yield InboxEvent(
        dedup_key=_key("h", field_name, canonical_hash(waba_id, field_name, value, entry_time)),
        field=field_name,
        kind=kind,
        waba_id=waba_id,
        phone_number_id=pnid,
        payload={"value": value},
        known=known,
        entry_time=entry_time,
    )


def _item_event(
    waba_id: str | None,
    entry_time: int | None,
    field_name: str,
    list_key: str,
    item: dict[str, Any],
    context: dict[str, Any],
    extra: dict[str, Any],
    pnid: str | None,
) -> InboxEvent:
    item_id = _str(item.get("id"))
    known = not extra
    if list_key == "messages":
        kind, key = "message", _key("m", item_id) if item_id else None
    elif list_key == "statuses":
        status = (_str(item.get("status")) or "").lower()
        kind = "call.status" if item.get("type") == "call" or field_name == "calls" else "status"
        key = _key("s", item_id, status) if item_id else None
    else:
        event = _str(item.get("event")) or "unknown"
        kind = f"call.{event}"
        key = _key("c", item_id, event) if item_id else None
        known = known and event in ("connect", "terminate")
    payload: dict[str, Any] = {"item": item, **_relevant_context(context, item)}
    if extra:
        payload["value_extra"] = extra
    return InboxEvent(
        dedup_key=key or _key("h", kind, canonical_hash(waba_id, field_name, item, entry_time)),
        field=field_name,
        kind=kind,
        waba_id=waba_id,
        phone_number_id=pnid,
        payload=payload,
        known=known,
        entry_time=entry_time,
    )


def _relevant_context(context: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Keep metadata and value-level errors; of the contacts keep the ones this item is about."""
    out = {k: v for k, v in context.items() if k != "contacts"}
    contacts = _dicts(context.get("contacts"))
    if len(contacts) > 1:
        ids = {item.get("from"), item.get("to"), item.get("recipient_id")}
        matching = [c for c in contacts if c.get("wa_id") in ids]
        contacts = matching or contacts
    if contacts:
        out["contacts"] = contacts
    return out


def model_of(kind: str, payload: dict[str, Any]) -> Model:
    """Rebuild the typed model of a stored inbox payload."""
    item = payload.get("item")
    if isinstance(item, dict):
        if kind == "message":
            return Message.from_dict(item)
        if kind in ("status", "call.status"):
            return Status.from_dict(item)
        if kind.startswith("call."):
            return CallEvent.from_dict(item, _dicts(payload.get("errors")))
    value = payload.get("value", payload)
    if kind == "account_settings_update" and isinstance(value, dict):
        return AccountSettingsUpdate(value)
    return UnknownChange(kind.removeprefix("unknown."), value)


def contacts_of(payload: dict[str, Any]) -> list[Contact]:
    return [Contact.from_dict(c) for c in _dicts(payload.get("contacts"))]


def metadata_of(payload: dict[str, Any]) -> Metadata:
    return Metadata.from_dict(payload.get("metadata") or (payload.get("value") or {}).get("metadata"))


def unknown_keys(event: InboxEvent) -> list[str]:
    """Keys of the event's item (and its change value) that no model knows (cheap, pure)."""
    found = sorted(event.payload.get("value_extra", ()))
    item = event.payload.get("item")
    if not isinstance(item, dict):
        return found
    if event.kind == "message":
        known: tuple[str, ...] = (*MESSAGE_KEYS, str(item.get("type")))
    elif event.kind in ("status", "call.status"):
        known = STATUS_KEYS
    elif event.kind.startswith("call."):
        known = CALL_KEYS
    else:
        return found
    return found + sorted(k for k in item if k not in known)


# ------------------------------------------------------------------ call state


@dataclass(frozen=True)
class CallOutcome:
    """What the webhook events say about one call, whatever order they arrived in."""

    call_id: str
    connected: bool = False
    terminated: bool = False
    status: str | None = None
    duration: int | None = None
    late_connect: bool = False  # connect arrived after terminate: must not reopen the call

    @property
    def active(self) -> bool:
        return self.connected and not self.terminated


def fold_call(outcome: CallOutcome | None, event: CallEvent) -> CallOutcome:
    """Apply one call event; terminate wins over any connect, before or after it."""
    current = outcome or CallOutcome(call_id=event.id)
    if event.event == "terminate":
        return CallOutcome(
            current.call_id,
            current.connected,
            True,
            (event.status or "").upper() or None,
            event.duration,
            current.late_connect,
        )
    if event.event == "connect":
        return CallOutcome(
            current.call_id, True, current.terminated, current.status, current.duration, current.terminated
        )
    return current
