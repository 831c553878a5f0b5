"""The simulated REST methods, each as its documentation page describes it.

Parameters arrive as parsed JSON (typed) or, inside `batch`, as PHP query strings (all
strings), so numbers are accepted in both forms exactly as PHP would. Errors use the
codes, messages and HTTP statuses the pages list; where a page is silent (noted inline)
the simulator picks the most conservative behaviour.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thoth_pbx.sandbox.bitrix.state import REGISTER_DEDUP_S, Portal, SimError, call_id_for, paged

if TYPE_CHECKING:
    from thoth_pbx.sandbox.bitrix.server import BitrixSimulator

Run = Callable[["BitrixSimulator", Portal, dict[str, Any]], Any]


@dataclass(frozen=True)
class MethodSpec:
    scope: str
    run: Run
    # (code, description, status) answered to an incoming webhook: the method needs an app
    app_only: tuple[str, str, int] | None = None


METHODS: dict[str, MethodSpec] = {}

# messageservice-*.md: "ACCESS_DENIED: Application context required"
_APP_CONTEXT = ("ACCESS_DENIED", "Application context required", 400)


def method(name: str, scope: str, *, app_only: tuple[str, str, int] | None = None) -> Callable[[Run], Run]:
    def register(fn: Run) -> Run:
        METHODS[name.lower()] = MethodSpec(scope, fn, app_only)
        return fn

    return register


# ---------------------------------------------------------------------------- helpers


def _core(description: str) -> SimError:
    return SimError("ERROR_CORE", description, 400)


def _null_arg(name: str) -> SimError:
    return SimError("ERROR_ARGUMENT", f"Argument '{name}' is null or empty", 400)


def _text(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return None


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    return str(value).strip().lower() not in ("0", "false", "n", "")


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def _user_for(portal: Portal, params: dict[str, Any]) -> int:
    """USER_ID or USER_PHONE_INNER (telephony register/finish)."""
    user_id, inner = params.get("USER_ID"), _text(params, "USER_PHONE_INNER")
    if (user_id is None or user_id == "") and not inner:
        raise _core("USER_ID or USER_PHONE_INNER should be set")
    user = portal.user(user_id) if user_id not in (None, "") else portal.user_by_extension(inner)
    if user is None:
        raise _core("User is not found or is not active")
    return user.id


# ---------------------------------------------------------------------------- telephony.externalCall.*

_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{2,30}$")


@method("telephony.externalcall.register", "telephony")
def register(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    user_id = _user_for(portal, params)
    phone = _text(params, "PHONE_NUMBER")
    call_type = _as_int(params.get("TYPE"))
    if call_type not in (1, 2, 3, 4, 5):
        raise _core("Unknown TYPE")
    start = _text(params, "CALL_START_DATE")
    if start:
        try:
            parsed = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise _core("CALL_START_DATE should be in the ISO-8601 format")
    if not _PHONE.match(phone):
        raise _core("Unsupported phone number format")
    line = _text(params, "LINE_NUMBER")
    external = _text(params, "EXTERNAL_CALL_ID")
    key = (_digits(phone), call_type, user_id, line, external)
    now = sim.clock()
    for call in portal.active_calls.values():  # re-registration within 30 minutes (register docs)
        if call["dedup_key"] == key and now - call["registered_at"] < REGISTER_DEDUP_S:
            return dict(call["response"])
    entity_type, entity_id = _text(params, "CRM_ENTITY_TYPE") or None, _as_int(params.get("CRM_ENTITY_ID"))
    created: list[dict[str, Any]] = []
    created_lead = None
    if entity_type is None:
        found = portal.crm.get(_digits(phone))
        if found:
            entity_type, entity_id = found[0]["CRM_ENTITY_TYPE"], found[0]["CRM_ENTITY_ID"]
        elif _flag(params.get("CRM_CREATE"), False):
            created_lead = portal.next_id("lead") + 1000
            entity_type, entity_id = "LEAD", created_lead
            created.append({"ENTITY_TYPE": "LEAD", "ENTITY_ID": created_lead})
            portal.crm[_digits(phone)] = [
                {"CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": created_lead, "NAME": phone, "ASSIGNED_BY_ID": user_id}
            ]
            portal.leads[created_lead] = {"ID": created_lead, "TITLE": phone, "ASSIGNED_BY_ID": user_id}
    call_id = call_id_for(portal, now)
    response = {
        "CALL_ID": call_id,
        "CRM_CREATED_LEAD": created_lead,
        "CRM_CREATED_ENTITIES": created,
        "CRM_ENTITY_TYPE": entity_type,
        "CRM_ENTITY_ID": entity_id,
    }
    portal.active_calls[call_id] = {
        "dedup_key": key,
        "registered_at": now,
        "response": response,
        "user_id": user_id,
        "phone": phone,
        "type": call_type,
        "line": line,
        "external_call_id": external or None,
        "start": start or dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
    }
    if _flag(params.get("SHOW"), True):
        portal.cards[call_id] = {user_id}
    return dict(response)


_STATUS_CODES = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402", "423", "OTHER"}


@method("telephony.externalcall.finish", "telephony")
def finish(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    call_id = params.get("CALL_ID")
    if not isinstance(call_id, str):
        raise SimError("INVALID_ARGUMENT", "CALL_ID must be a string", 400)
    user_id = _user_for(portal, params)
    call = portal.active_calls.get(call_id)
    if call is None:
        raise _core("Call is not found (call should be registered prior to finishing)")
    duration = _as_int(params.get("DURATION")) or 0
    status = _text(params, "STATUS_CODE") or ("200" if duration > 0 else "304")
    if status not in _STATUS_CODES:
        status = "OTHER"  # the docs list the values; anything else is "undefined"
    del portal.active_calls[call_id]
    portal.cards.pop(call_id, None)  # finish also hides the card
    row_id = portal.next_id("statistic")
    row = {
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": call["external_call_id"],
        "PORTAL_USER_ID": user_id,
        "PHONE_NUMBER": call["phone"],
        "PORTAL_NUMBER": call["line"],
        "INCOMING": str(call["type"]),
        "CALL_DURATION": duration,
        "CALL_START_DATE": call["start"],
        "CALL_STATUS": 1 if status == "200" else 0,
        "CALL_VOTE": _as_int(params.get("VOTE")),
        "COST": float(params.get("COST") or 0),
        "COST_CURRENCY": _text(params, "COST_CURRENCY"),
        "CALL_FAILED_CODE": status,
        "CALL_FAILED_REASON": _text(params, "FAILED_REASON"),
        "REST_APP_ID": "1",
        "REST_APP_NAME": "thoth-pbx",
        "CRM_ACTIVITY_ID": portal.next_id("activity") + 7000,
        "COMMENT": None,
        "CRM_ENTITY_TYPE": call["response"]["CRM_ENTITY_TYPE"],
        "CRM_ENTITY_ID": call["response"]["CRM_ENTITY_ID"],
        "ID": row_id,
        # not in Bitrix's answer; kept so tests can check what was asked
        "_ADD_TO_CHAT": params.get("ADD_TO_CHAT") not in (None, "", "0", 0, False),
    }
    portal.statistics[call_id] = row
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _users_param(portal: Portal, params: dict[str, Any], call_id: str) -> set[int]:
    raw = params.get("USER_ID")
    if raw is None or raw == "":
        call = portal.active_calls.get(call_id)
        return {call["user_id"]} if call else set()
    values = raw if isinstance(raw, list) else [raw]
    return {v for v in (_as_int(x) for x in values) if v is not None}


def _card(show_it: bool) -> Run:
    """show/hide: true when the call is active (the card changes), false when it is not found."""

    def run(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
        call_id = _text(params, "CALL_ID")
        if call_id not in portal.active_calls:
            return False
        users = _users_param(portal, params, call_id)
        seeing = portal.cards.setdefault(call_id, set())
        if show_it:
            seeing.update(users)
        else:
            seeing.difference_update(users)
        return True

    return run


method("telephony.externalcall.show", "telephony")(_card(True))
method("telephony.externalcall.hide", "telephony")(_card(False))


@method("telephony.externalcall.attachrecord", "telephony")
def attach_record(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    call_id = _text(params, "CALL_ID")
    url, filename = _text(params, "RECORD_URL"), params.get("FILENAME")
    if not url and filename is None:
        raise _core("Required parameters are not set. Request should contain either URL or FILENAME parameter")
    if call_id not in portal.statistics:
        raise _core("Call is not found in the statistic table. It looks like it is not finished yet.")
    name = str(filename or url.rsplit("/", 1)[-1]).strip()
    if not name:
        raise _core("File name is empty")
    if not name.lower().endswith((".wav", ".mp3")):
        raise _core("Wrong file extension. Only wav and mp3 are allowed")
    if url:
        size = None  # the simulator does not fetch the URL; it trusts it like a quick, reachable server
    elif "FILE_CONTENT" in params:
        content = params.get("FILE_CONTENT")
        if not content:
            raise _core("File content is empty.")
        try:
            size = len(base64.b64decode(str(content), validate=True))
        except (binascii.Error, ValueError):
            raise _core("File content is not properly encoded. Base64 encoding is expected.") from None
    else:
        return {"uploadUrl": f"{portal.client_endpoint}upload.json?token=telephony%7C{call_id}", "fieldName": "file"}
    file_id = portal.next_id("file") + 9000
    portal.records[call_id] = {"FILE_ID": file_id, "FILENAME": name, "size": size, "url": url or None}  # replaces
    return {"FILE_ID": file_id}


@method("telephony.externalcall.searchcrmentities", "telephony")
def search_crm(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entity in portal.crm.get(_digits(_text(params, "PHONE_NUMBER")), []):
        owner = portal.users.get(int(entity.get("ASSIGNED_BY_ID") or 0))
        out.append(
            {
                "CRM_ENTITY_TYPE": entity["CRM_ENTITY_TYPE"],
                "CRM_ENTITY_ID": entity["CRM_ENTITY_ID"],
                "ASSIGNED_BY_ID": entity.get("ASSIGNED_BY_ID"),
                "NAME": entity.get("NAME", ""),
                "ASSIGNED_BY": {
                    "ID": str(owner.id) if owner else None,
                    "TIMEMAN_STATUS": "OPENED",
                    "USER_PHONE_INNER": owner.extension if owner else None,
                    "WORK_PHONE": None,
                    "PERSONAL_PHONE": None,
                    "PERSONAL_MOBILE": None,
                },
            }
        )
    return out


# ---------------------------------------------------------------------------- crm.contact.*

_CONTACT_FIELDS = ("NAME", "SECOND_NAME", "LAST_NAME", "SOURCE_ID", "SOURCE_DESCRIPTION", "COMMENTS", "OPENED")


@method("crm.contact.add", "crm")
def contact_add(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> int:
    """crm-contact-add.md: `fields` (an incorrect field is ignored); the new contact's ID. The
    responsible defaults to the calling user (the app's: the portal's first user here); a PHONE
    multifield makes the contact findable by number like any CRM entity."""
    fields = params.get("fields") or params.get("FIELDS")
    if not isinstance(fields, dict):
        raise SimError("ERROR_ARGUMENT", "Argument 'fields' is null or empty", 400)
    contact_id = portal.next_id("contact") + 500
    owner = _as_int(fields.get("ASSIGNED_BY_ID")) or min(portal.users, default=1)
    contact: dict[str, Any] = {k: str(fields[k]) for k in _CONTACT_FIELDS if fields.get(k) is not None}
    contact |= {"ID": contact_id, "ASSIGNED_BY_ID": owner}
    portal.contacts[contact_id] = contact
    phones = fields.get("PHONE")
    for phone in phones if isinstance(phones, list) else []:
        digits = _digits(str(phone.get("VALUE") or "")) if isinstance(phone, dict) else ""
        if digits:
            name = " ".join(p for p in (contact.get("NAME"), contact.get("LAST_NAME")) if p)
            portal.crm.setdefault(digits, []).append(
                {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": contact_id, "NAME": name, "ASSIGNED_BY_ID": owner}
            )
    return contact_id


def _entity_get(store: dict[int, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    entity_id = _as_int(params.get("id") or params.get("ID"))
    if entity_id is None or entity_id <= 0:
        raise SimError("", "ID is not defined or invalid.", 400)
    entity = store.get(entity_id)
    if entity is None:
        raise SimError("", "Not found", 400)
    return {k: (str(v) if k in ("ID", "ASSIGNED_BY_ID") else v) for k, v in entity.items()}


@method("crm.contact.get", "crm")
def contact_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """crm-contact-get.md: the contact by `id`; the page's errors have an empty code."""
    return _entity_get(portal.contacts, params)


@method("crm.lead.get", "crm")
def lead_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """crm-lead-get.md: the lead by `id` (one register's CRM_CREATE or an Open Lines chat made),
    errors as crm.contact.get."""
    return _entity_get(portal.leads, params)


# ---------------------------------------------------------------------------- telephony.externalLine.*


@method("telephony.externalline.add", "telephony")
def line_add(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    number = _text(params, "NUMBER")
    if not number:
        raise _core("NUMBER should not be empty")
    if number in portal.lines:
        raise _core("Line already exists")
    line_id = portal.next_id("line")
    auto = _text(params, "CRM_AUTO_CREATE").upper() or "Y"
    portal.lines[number] = {
        "ID": line_id,
        "NUMBER": number,
        "NAME": _text(params, "NAME"),
        "CRM_AUTO_CREATE": "N" if auto == "N" else "Y",
    }
    return {"ID": line_id}


@method("telephony.externalline.get", "telephony")
def line_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"NUMBER": line["NUMBER"], "NAME": line["NAME"], "CRM_AUTO_CREATE": line["CRM_AUTO_CREATE"]}
        for line in portal.lines.values()
    ]


@method("telephony.externalline.update", "telephony")
def line_update(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    number = _text(params, "NUMBER")
    if not number:
        raise _core("NUMBER should not be empty")
    if "NAME" not in params and "CRM_AUTO_CREATE" not in params:
        raise _core("There are no fields to update")
    line = portal.lines.get(number)
    if line is None:
        raise _core(f"Could not find line with number {number}")
    if "NAME" in params:
        line["NAME"] = _text(params, "NAME")
    if "CRM_AUTO_CREATE" in params:
        line["CRM_AUTO_CREATE"] = "N" if _text(params, "CRM_AUTO_CREATE").upper() == "N" else "Y"
    return {"ID": str(line["ID"])}


@method("telephony.externalline.delete", "telephony")
def line_delete(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> list[Any]:
    number = _text(params, "NUMBER")
    if not number:
        raise _core("NUMBER should not be empty")
    if portal.lines.pop(number, None) is None:
        raise _core(f"Could not find line with number {number}")
    return []


# ---------------------------------------------------------------------------- user.get

# user-get.md lists these prefixes; longest first so `!=%` is not read as `!=` + `%NAME`
_PREFIXES = ("!=%", "!%=", ">=", "<=", "!@", "=%", "%=", "!%", "!=", ">", "<", "@", "%", "=", "!")
_SPLIT_PREFIX = re.compile(r"^([^A-Z0-9_]{1,3})([A-Z0-9_].*)$")
# the fields our SimUser carries, with how they compare; Bitrix drops filter keys outside its
# allowed user fields without an error (rest/lib/api/user.php, prepareUserFilter)
_USER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "ID": lambda u: u.id,
    "ACTIVE": lambda u: "Y" if u.active else "N",
    "NAME": lambda u: u.name,
    "LAST_NAME": lambda u: u.last_name,
    "EMAIL": lambda u: f"user{u.id}@example.com",
    "UF_PHONE_INNER": lambda u: u.extension or "",
    "USER_TYPE": lambda u: u.user_type,
}
_KNOWN_USER_FIELDS = {
    "SECOND_NAME",
    "PERSONAL_GENDER",
    "PERSONAL_PROFESSION",
    "PERSONAL_WWW",
    "PERSONAL_BIRTHDAY",
    "PERSONAL_PHOTO",
    "PERSONAL_ICQ",
    "PERSONAL_PHONE",
    "PERSONAL_FAX",
    "PERSONAL_MOBILE",
    "PERSONAL_PAGER",
    "PERSONAL_STREET",
    "PERSONAL_CITY",
    "PERSONAL_STATE",
    "PERSONAL_ZIP",
    "PERSONAL_COUNTRY",
    "WORK_COMPANY",
    "WORK_POSITION",
    "WORK_PHONE",
    "UF_DEPARTMENT",
    "IS_ONLINE",
    "NAME_SEARCH",
}


def _php_truthy(value: Any) -> bool:
    return value not in (None, False, 0, 0.0, "", "0", [], {})


def _filter_value(field: str, value: Any) -> Any:
    """As prepareUserValue: ID to int, ACTIVE to Y/N (anything truthy but 'N' is Y)."""
    if field == "ID":
        return _as_int(value) if _as_int(value) is not None else 0
    if field == "ACTIVE":
        return "Y" if _php_truthy(value) and value != "N" else "N"
    return "" if value is None else str(value)


def _like(pattern: str, value: str) -> bool:
    """LIKE with the `%` wildcard the docs describe, case-insensitive like the portal's MySQL collation."""
    regex = "".join(".*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def _eq(have: Any, want: Any) -> bool:
    if isinstance(have, int):
        return bool(have == want)
    return str(have).lower() == str(want).lower()


def _order_key(have: Any, want: Any) -> tuple[Any, Any]:
    if isinstance(have, int):
        return have, want
    return str(have).lower(), str(want).lower()


def _user_condition(prefix: str, field: str, wanted: Any) -> Callable[[Any], bool]:
    """One FILTER entry as a predicate on a SimUser (user-get.md, FILTER prefixes)."""
    get: Callable[[Any], Any] = _USER_FIELDS[field]
    values = [_filter_value(field, v) for v in (wanted if isinstance(wanted, list) else [wanted])]
    test: Callable[[Any], bool]
    if prefix in ("", "=", "@", "!", "!=", "!@"):
        negate = prefix in ("!", "!=", "!@")
        if prefix == "" and field not in ("ID", "ACTIVE", "USER_TYPE"):
            # no prefix on a string field is LIKE: `NAME: "Iv%"` finds names starting with Iv
            def test(u: Any) -> bool:
                return any(_like(str(v), str(get(u))) for v in values)
        else:

            def test(u: Any) -> bool:
                return any(_eq(get(u), v) for v in values)
    elif prefix in (">", ">=", "<", "<="):
        op = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}[prefix]
        negate = False

        def test(u: Any) -> bool:
            return any(op(*_order_key(get(u), v)) for v in values)
    elif prefix in ("%", "!%"):  # substring, the % is not passed
        negate = prefix == "!%"

        def test(u: Any) -> bool:
            return any(str(v).lower() in str(get(u)).lower() for v in values)
    else:  # "=%", "%=", "!=%", "!%=": LIKE with the % in the value
        negate = prefix.startswith("!")

        def test(u: Any) -> bool:
            return any(_like(str(v), str(get(u))) for v in values)

    return (lambda u: not test(u)) if negate else test


@method("user.get", "user")
def user_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> Any:
    """user-get.md: FILTER (or, when there is none, the top-level keys) with the documented prefixes."""
    query = {str(k).upper(): v for k, v in params.items()}
    flt = query.get("FILTER")
    # rest/lib/api/user.php: without a FILTER array the top-level keys are the filter (legacy,
    # kept "to save backward compatibility"; the docs' cURL examples pass UF_DEPARTMENT that way)
    source = flt if isinstance(flt, dict) else query
    users = sorted(portal.users.values(), key=lambda u: u.id)
    for raw_key, wanted in source.items():
        key = str(raw_key).upper()
        split = _SPLIT_PREFIX.match(key)
        prefix, field = (split.group(1), split.group(2)) if split else ("", key)
        if prefix and prefix not in _PREFIXES:
            if field in _USER_FIELDS or field in _KNOWN_USER_FIELDS:
                # an operator user-get.md does not list: what Bitrix does is undocumented, so the
                # simulator refuses rather than guess (docs/bitrix.md)
                raise _core(f"Unknown filter operation '{prefix}' for field {field}")
            continue
        if field in _KNOWN_USER_FIELDS:
            raise _core(f"Filtering by {field} is not simulated")  # never a silently wrong answer
        if field not in _USER_FIELDS:
            continue  # Bitrix drops keys outside its user fields without an error
        if isinstance(wanted, dict):
            wanted = list(wanted.values())  # a PHP array either way
        condition = _user_condition(prefix, field, wanted)
        users = [u for u in users if condition(u)]
    if str(query.get("ORDER") or "ASC").upper() == "DESC":
        users.reverse()
    return paged([u.as_json() for u in users], params.get("start"))


# ---------------------------------------------------------------------------- event.*

KNOWN_EVENTS = {
    "ONAPPINSTALL",
    "ONAPPUNINSTALL",
    "ONAPPUPDATE",
    "ONAPPPAYMENT",
    "ONEXTERNALCALLSTART",
    "ONEXTERNALCALLBACKSTART",
    "ONIMCONNECTORMESSAGEADD",
    "ONIMCONNECTORMESSAGEUPDATE",
    "ONIMCONNECTORMESSAGEDELETE",
    "ONIMCONNECTORLINEDELETE",
    "ONIMCONNECTORSTATUSDELETE",
    "ONCRMLEADADD",
    "ONCRMCONTACTADD",
    "ONUSERADD",
}


@method("event.bind", "basic", app_only=_APP_CONTEXT)
def event_bind(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    event = _text(params, "event") or _text(params, "EVENT")
    handler = _text(params, "handler") or _text(params, "HANDLER")
    if not event:
        raise _null_arg("EVENT")
    if not handler:
        raise _null_arg("HANDLER")
    if event.upper() not in KNOWN_EVENTS:
        raise SimError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    if not re.match(r"^https?://", handler):
        raise SimError("ERROR_ARGUMENT", "Wrong handler URL", 400)
    if any(b["event"] == event.upper() and b["handler"] == handler for b in portal.bindings):
        # Undocumented answer; Bitrix refuses a duplicate handler, installers check event.get first.
        raise SimError("ERROR_CORE", "Handler already binded", 400)
    offline = (_text(params, "event_type") or "online").lower() == "offline"
    portal.bindings.append(
        {
            "id": portal.next_id("handler") + 1000,
            "event": event.upper(),
            "handler": handler,
            "auth_type": str(params.get("auth_type") or 0),
            "offline": 1 if offline else 0,
        }
    )
    return True


@method("event.get", "basic", app_only=_APP_CONTEXT)
def event_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"event": b["event"], "handler": b["handler"], "auth_type": b["auth_type"], "offline": b["offline"]}
        for b in portal.bindings
    ]


@method("event.unbind", "basic", app_only=_APP_CONTEXT)
def event_unbind(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, int]:
    event = (_text(params, "event") or _text(params, "EVENT")).upper()
    handler = _text(params, "handler") or _text(params, "HANDLER")
    keep, removed = [], 0
    for b in portal.bindings:
        if (not event or b["event"] == event) and (not handler or b["handler"] == handler):
            removed += 1
        else:
            keep.append(b)
    portal.bindings[:] = keep
    return {"count": removed}


# ---------------------------------------------------------------------------- imopenlines.config.*
# apidocs.bitrix24.com/api-reference/imopenlines/openlines/ (config-add, config-get,
# config-list-get, config-delete): a line's settings; `add` answers the new ID.


def _line_view(line_id: int, line: dict[str, Any]) -> dict[str, Any]:
    return {"ID": str(line_id), "LINE_NAME": line["LINE_NAME"], "ACTIVE": line["ACTIVE"]}


@method("imopenlines.config.add", "imopenlines")
def openlines_add(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> int:
    settings: dict[str, Any] = params["PARAMS"] if isinstance(params.get("PARAMS"), dict) else {}
    line_id = portal.next_id("openline")
    # CRM (search the client in CRM) defaults to Y and CRM_CREATE (what a new client gets) to
    # "lead" (imopenlines-config-add.md; the module's ConfigTable defaults)
    crm_create = _text(settings, "CRM_CREATE")
    portal.open_lines[line_id] = {
        "LINE_NAME": _text(settings, "LINE_NAME") or f"Open Channel {line_id}",
        "ACTIVE": "N" if _text(settings, "ACTIVE") == "N" else "Y",
        "CRM": "N" if _text(settings, "CRM") == "N" else "Y",
        "CRM_CREATE": crm_create if crm_create in ("none", "lead", "deal") else "lead",
    }
    return line_id


@method("imopenlines.config.get", "imopenlines")
def openlines_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    line_id = _as_int(params.get("CONFIG_ID"))
    if not line_id:
        raise _null_arg("CONFIG_ID")
    if line_id not in portal.open_lines:
        raise SimError("CONFIG_NOT_FOUND", "Open line not found", 400)
    return _line_view(line_id, portal.open_lines[line_id])


@method("imopenlines.config.list.get", "imopenlines")
def openlines_list(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [_line_view(i, line) for i, line in sorted(portal.open_lines.items())]


@method("imopenlines.config.delete", "imopenlines")
def openlines_delete(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    line_id = _as_int(params.get("CONFIG_ID"))
    if not line_id or portal.open_lines.pop(line_id, None) is None:
        raise SimError("CONFIG_NOT_FOUND", "Open line not found", 400)
    for key in [k for k in portal.connector_lines if k[1] == line_id]:
        del portal.connector_lines[key]
    return True


# ---------------------------------------------------------------------------- imconnector.* (basics)


def _connector_reply(error: str | None = None, description: str = "") -> dict[str, Any]:
    # imconnector.register answers errors with HTTP 200 and result.result=false (docs)
    if error:
        return {"result": False, "error": error, "error_description": description}
    return {"result": True}


@method("imconnector.register", "imconnector")
def connector_register(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    connector_id = _text(params, "ID").lower()
    if not connector_id:
        return _connector_reply("CONNECTOR_ID_REQUIRED", "Connector ID is not specified")
    if "." in connector_id:
        return _connector_reply("APPLICATION_REGISTRATION_ERROR_POINT", "The connector ID must not contain a dot")
    if not _text(params, "NAME"):
        return _connector_reply("NAME_REQUIRED", "Connector name is not specified")
    icon = params.get("ICON")
    if not isinstance(icon, dict) or not icon.get("DATA_IMAGE"):
        return _connector_reply("ICON_REQUIRED", "Connector icon is not specified")
    if not _text(params, "PLACEMENT_HANDLER"):
        return _connector_reply("NO_PLACEMENT_HANDLER", "Placement handler is not specified")
    portal.connectors[connector_id] = {"ID": connector_id, "NAME": _text(params, "NAME")}
    return _connector_reply()


@method("imconnector.unregister", "imconnector")
def connector_unregister(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    connector_id = _text(params, "ID").lower()
    if portal.connectors.pop(connector_id, None) is None:
        return _connector_reply("CONNECTOR_NOT_FOUND", "Connector not found")
    return _connector_reply()


@method("imconnector.list", "imconnector")
def connector_list(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, str]:
    return {cid: c["NAME"] for cid, c in portal.connectors.items()}


def _connector_line(params: dict[str, Any], *, need_line: bool = True) -> tuple[str, int]:
    connector = _text(params, "CONNECTOR").lower()
    if not connector:
        raise _null_arg("CONNECTOR")
    line = _as_int(params.get("LINE"))
    if need_line and not line:
        raise _null_arg("LINE")
    return connector, line or 0


@method("imconnector.activate", "imconnector")
def connector_activate(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    connector, line = _connector_line(params)
    if params.get("ACTIVE") in (None, ""):
        raise _null_arg("ACTIVE")
    if _flag(params.get("ACTIVE"), False):
        portal.connector_lines[(connector, line)] = {"active": True, "error": False, "data": {}}
    else:
        portal.connector_lines.pop((connector, line), None)
    return True


@method("imconnector.status", "imconnector")
def connector_status(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    connector, line = _connector_line(params, need_line=False)
    state = portal.connector_lines.get((connector, line))
    ok = bool(state and state["active"] and not state["error"])
    return {
        "LINE": line,
        "CONNECTOR": connector,
        "ERROR": bool(state and state["error"]),
        "CONFIGURED": ok,
        "STATUS": ok,
    }


@method("imconnector.connector.data.set", "imconnector")
def connector_data_set(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    connector, line = _connector_line(params)
    data = params.get("DATA")
    if not isinstance(data, dict) or not data:
        raise _null_arg("DATA")
    state = portal.connector_lines.setdefault((connector, line), {"active": False, "error": False, "data": {}})
    state["data"].update({str(k).upper(): v for k, v in data.items()})  # the source merges
    return True


# messageservice.* (the SMS provider) lives in messageservice.py and registers itself here.


# ---------------------------------------------------------------------------- app.info


@method("app.info", "basic", app_only=("ACCESS_DENIED", "Access denied! Application context required", 400))
def app_info(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """app-info.md: every documented field; a local app ("L") on a Project plan with no paid period."""
    language, plan = "en", "project"
    return {
        "ID": 1,
        "CODE": sim.client_id,
        "VERSION": 1,
        "STATUS": "L",
        "INSTALLED": portal.installed,
        "PAYMENT_EXPIRED": "N",
        "DAYS": None,
        "LANGUAGE_ID": language,
        "LICENSE": f"{language}_{plan}",
        "LICENSE_TYPE": plan,
        "LICENSE_FAMILY": plan,
    }


# The Open Lines chat methods (imconnector.send/update/delete.messages, the statuses,
# im.message.add) live in openlines.py and register themselves here.
from thoth_pbx.sandbox.bitrix import messageservice as _messageservice  # noqa: E402, F401
from thoth_pbx.sandbox.bitrix import openlines as _openlines  # noqa: E402, F401
