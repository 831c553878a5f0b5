"""What each Graph endpoint does to the state, as Meta's docs describe it (pure: no HTTP here)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from thoth_pbx.sandbox.meta import permissions
from thoth_pbx.sandbox.meta.state import GraphFail, SimApp, SimPhone, invalid
from thoth_pbx.sandbox.meta.templates import SimTemplate, check_template_send, recipient_key, window_open
from thoth_pbx.sandbox.meta.webhooks import STATUS_ERRORS

_CALLING_KEYS = {
    "status",
    "call_icon_visibility",
    "call_icons",
    "callback_permission_status",
    "call_hours",
    "sip",
    "srtp_key_exchange_protocol",
    "audio",
}


_ENUMS = {
    "status": ("ENABLED", "DISABLED"),
    "call_icon_visibility": ("DEFAULT", "DISABLE_ALL", "HIDE_IN_CHAT"),
    "callback_permission_status": ("ENABLED", "DISABLED"),
    "srtp_key_exchange_protocol": ("DTLS", "SDES"),
}


_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


_HHMM = re.compile(r"^([01]\d|2[0-3])[0-5]\d$")


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _expect_keys(where: str, value: Any, allowed: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"Param {where} must be a JSON object")
    allowed = set(allowed)
    for key in value:
        if key not in allowed:
            raise invalid(f"Param {where}[{key}] is not a valid parameter")
    return value


def _enum(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise invalid(f"Param {where} must be one of {{{', '.join(choices)}}}")
    return str(value)


def validate_settings(body: Any) -> dict[str, Any]:
    """Check a settings update field by field; return the `calling` object."""
    body = _expect_keys("body", body, {"calling"})
    if "calling" not in body:
        raise invalid("The parameter calling is required")
    calling = _expect_keys("calling", body["calling"], _CALLING_KEYS)
    for key, choices in _ENUMS.items():
        if key in calling:
            _enum(f"calling[{key}]", calling[key], choices)
    if "audio" in calling:
        audio = _expect_keys("calling[audio]", calling["audio"], {"additional_codecs"})
        codecs = audio.get("additional_codecs", [])
        if not isinstance(codecs, list) or any(c not in ("PCMA", "PCMU") for c in codecs):
            raise invalid("Param calling[audio][additional_codecs] may only hold PCMA and PCMU (Opus is always on)")
    if "call_icons" in calling:
        icons = _expect_keys("calling[call_icons]", calling["call_icons"], {"restrict_to_user_countries"})
        countries = icons.get("restrict_to_user_countries", [])
        if not isinstance(countries, list) or any(
            not (isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c)) for c in countries
        ):
            raise invalid("Param calling[call_icons][restrict_to_user_countries] must be ISO country codes")
    if "call_hours" in calling:
        _validate_call_hours(calling["call_hours"])
    if "sip" in calling:
        sip = _expect_keys("calling[sip]", calling["sip"], {"status", "servers"})
        if "status" in sip:
            _enum("calling[sip][status]", sip["status"], ("ENABLED", "DISABLED"))
        if "servers" in sip:
            servers = sip["servers"]
            if not isinstance(servers, list):
                raise invalid("Param calling[sip][servers] must be an array")
            if len(servers) > 1:
                raise invalid("Only one SIP server is allowed per phone number")
            for i, server in enumerate(servers):
                where = f"calling[sip][servers][{i}]"
                server = _expect_keys(where, server, {"hostname", "port", "request_uri_user_params"})
                if not isinstance(server.get("hostname"), str) or not server["hostname"].strip():
                    raise invalid(f"Param {where}[hostname] is required")
                port = server.get("port", 5061)
                if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                    raise invalid(f"Param {where}[port] must be a port number")
                params = server.get("request_uri_user_params", {})
                if not isinstance(params, dict) or any(
                    not isinstance(k, str) or not isinstance(v, str) or len(k) > 128 or len(v) > 128
                    for k, v in params.items()
                ):
                    raise invalid(
                        f"Param {where}[request_uri_user_params] keys and values must be strings of at most 128 characters"
                    )
    return calling


def _validate_call_hours(hours: Any) -> None:
    hours = _expect_keys(
        "calling[call_hours]", hours, {"status", "timezone_id", "weekly_operating_hours", "holiday_schedule"}
    )
    _enum("calling[call_hours][status]", hours.get("status"), ("ENABLED", "DISABLED"))
    if hours["status"] != "ENABLED":
        return
    if not isinstance(hours.get("timezone_id"), str) or "/" not in hours["timezone_id"]:
        raise invalid("Param calling[call_hours][timezone_id] is not a valid timezone")
    weekly = hours.get("weekly_operating_hours")
    if not isinstance(weekly, list) or not weekly:
        raise invalid("Param calling[call_hours][weekly_operating_hours] must not be empty")
    per_day: dict[str, list[tuple[str, str]]] = {}
    for entry in weekly:
        entry = _expect_keys(
            "calling[call_hours][weekly_operating_hours][]", entry, {"day_of_week", "open_time", "close_time"}
        )
        day = _enum("day_of_week", entry.get("day_of_week"), _DAYS)
        start, end = entry.get("open_time"), entry.get("close_time")
        if not (
            isinstance(start, str) and _HHMM.match(start) and isinstance(end, str) and _HHMM.match(end) and start < end
        ):
            raise invalid("open_time and close_time must be HHMM with open_time before close_time")
        per_day.setdefault(day, []).append((start, end))
    for day, spans in per_day.items():
        if len(spans) > 2:
            raise invalid(f"At most 2 entries per day are allowed ({day})")
        spans.sort()
        if len(spans) == 2 and spans[1][0] < spans[0][1]:
            raise invalid(f"Operating hours on {day} overlap")
    holidays = hours.get("holiday_schedule", [])
    if not isinstance(holidays, list) or len(holidays) > 20:
        raise invalid("Param calling[call_hours][holiday_schedule] allows at most 20 entries")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for entry in holidays:
        entry = _expect_keys("calling[call_hours][holiday_schedule][]", entry, {"date", "start_time", "end_time"})
        if not (isinstance(entry.get("date"), str) and _DATE.match(entry["date"])):
            raise invalid("holiday_schedule date must be YYYY-MM-DD")
        if entry["date"] < today:
            raise invalid("holiday_schedule date must not be in the past")


def update_settings(phone: SimPhone, app: SimApp, body: Any) -> None:
    """Validate, check the documented preconditions on the merged result, then store."""
    calling = validate_settings(body)
    sip = calling.get("sip", {})
    servers = dict(phone.servers)
    if "servers" in sip:
        servers.pop(app.app_id, None)
        for server in sip["servers"]:
            servers[app.app_id] = {
                "hostname": server["hostname"].strip(),
                "port": server.get("port", 5061),
                **(
                    {"request_uri_user_params": server["request_uri_user_params"]}
                    if server.get("request_uri_user_params")
                    else {}
                ),
            }
    sip_status = sip.get("status", phone.sip_status)
    status = calling.get("status", phone.calling.get("status"))
    if sip_status == "ENABLED" and not servers:
        raise invalid("At least one SIP server must be configured when SIP is enabled")
    if sip_status == "ENABLED" and not app.live:
        raise GraphFail(138018, details="The app must be in Live mode to use SIP")
    if status == "ENABLED":
        if phone.messaging_limit < 2000:
            raise GraphFail(138015, details="The phone number's messaging limit must be at least 2000")
        if sip_status != "ENABLED" and "calls" not in app.subscribed_fields:
            raise GraphFail(138018, details="Configure SIP or subscribe an app to the calls webhook field")
    # stored only now: a refused update changes nothing
    if "servers" in sip and app.app_id not in servers:
        phone.passwords.pop(app.app_id, None)  # documented password reset: clear, then enable again
    phone.servers = servers
    phone.sip_status = sip_status
    for key in (
        "status",
        "call_icon_visibility",
        "callback_permission_status",
        "srtp_key_exchange_protocol",
        "audio",
        "call_icons",
    ):
        if key in calling:
            phone.calling[key] = calling[key]
    if "call_hours" in calling:
        hours = dict(calling["call_hours"])
        hours.setdefault("holiday_schedule", [])  # omitted -> the existing schedule is deleted
        phone.calling["call_hours"] = hours
    for app_id in servers:
        phone.passwords.setdefault(app_id, secrets.token_urlsafe(24))


def settings_view(phone: SimPhone, app_id: str | None, with_credentials: bool) -> dict[str, Any]:
    calling = {k: v for k, v in phone.calling.items()}
    servers = []
    for owner, server in phone.servers.items():
        entry = {"app_id": owner, **server}
        if with_credentials and owner == app_id and owner in phone.passwords:
            entry["sip_user_password"] = phone.passwords[owner]
        servers.append(entry)
    calling["sip"] = {"status": phone.sip_status, "servers": servers}
    if phone.restrictions:
        calling["restrictions"] = {"restrictions_list": phone.restrictions}
    return {"calling": calling}


# ---- POST /{phone_number_id}/messages
# Sources: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages and the per-type
# guides under developers.facebook.com/documentation/business-messaging/whatsapp/messages/
# (text, image, video, audio, document, sticker, location, contacts, interactive reply
# buttons / list / CTA URL, reaction, template messages; context for replies).

MESSAGE_TYPES = (
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
    "template",
)

MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")

# What each media object may hold: `id` or `link`; caption only for image, video and document;
# filename only for document; `voice` (send as a voice message) only for audio.
_MEDIA_KEYS = {
    "image": ("id", "link", "caption"),
    "video": ("id", "link", "caption"),
    "document": ("id", "link", "caption", "filename"),
    "audio": ("id", "link", "voice"),
    "sticker": ("id", "link"),
}

_TOP_KEYS = {
    "messaging_product",
    "recipient_type",
    "to",
    "recipient",
    "type",
    "context",
    "biz_opaque_callback_data",
    "recipient_identity_key_hash",
    *MESSAGE_TYPES,
}

_INTERACTIVE_TYPES = (
    "button",
    "list",
    "cta_url",
    "flow",
    "product",
    "product_list",
    "catalog_message",
    "location_request_message",
    "address_message",
    "call_permission_request",
    "voice_call",
)


def _present(obj: dict[str, Any], key: str) -> bool:
    """Clients send optional fields as null (pywa does); null counts as absent."""
    return obj.get(key) is not None


def _string(where: str, value: Any, *, max_len: int | None = None, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise invalid(f"Param {where} is required and must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise invalid(f"Param {where} must be at most {max_len} characters")


def _number(where: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise invalid(f"Param {where} is required and must be a number from {low:g} to {high:g}")


def _http_url(where: str, value: Any) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(f"Param {where} must be an http or https URL")


def _objects(where: str, value: Any, keys: Iterable[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise invalid(f"Param {where} must be an array")
    return [_expect_keys(f"{where}[{i}]", item, keys) for i, item in enumerate(value)]


def _validate_media(kind: str, value: Any, uploaded: Mapping[str, str]) -> None:
    media = _expect_keys(kind, value, _MEDIA_KEYS[kind])
    has_id, has_link = _present(media, "id"), _present(media, "link")
    if has_id == has_link:
        raise invalid(f"Param {kind} must have exactly one of {kind}[id] or {kind}[link]")
    if has_link:
        _http_url(f"{kind}[link]", media["link"])
    elif not isinstance(media["id"], str) or media["id"] not in uploaded:
        # What Graph answers for an id that is not this number's media (seen in many client
        # projects' error handling): code 100, "Param image['id'] is not a valid whatsapp business
        # account media attachment ID".
        message = f"(#100) Param {kind}['id'] is not a valid whatsapp business account media attachment ID"
        raise GraphFail(100, message, details=message[7:])
    _string(f"{kind}[caption]", media.get("caption"), max_len=1024, required=False)
    _string(f"{kind}[filename]", media.get("filename"), max_len=240, required=False)
    if _present(media, "voice") and not isinstance(media["voice"], bool):
        raise invalid(f"Param {kind}[voice] must be a boolean")


def _validate_location(value: Any) -> None:
    location = _expect_keys("location", value, {"latitude", "longitude", "name", "address"})
    _number("location[latitude]", location.get("latitude"), -90, 90)
    _number("location[longitude]", location.get("longitude"), -180, 180)
    _string("location[name]", location.get("name"), required=False)
    _string("location[address]", location.get("address"), required=False)


_CONTACT_PARTS: dict[str, tuple[str, ...]] = {
    "addresses": ("street", "city", "state", "zip", "country", "country_code", "type"),
    "emails": ("email", "type"),
    "phones": ("phone", "type", "wa_id"),
    "urls": ("url", "type"),
}


def _validate_contacts(value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise invalid("Param contacts must be a non-empty array")
    for i, contact in enumerate(value):
        where = f"contacts[{i}]"
        contact = _expect_keys(where, contact, {"name", "birthday", "org", *_CONTACT_PARTS})
        name = _expect_keys(
            f"{where}[name]",
            contact.get("name"),
            ("formatted_name", "first_name", "last_name", "middle_name", "suffix", "prefix"),
        )
        _string(f"{where}[name][formatted_name]", name.get("formatted_name"))
        if _present(contact, "birthday") and not (
            isinstance(contact["birthday"], str) and _DATE.match(contact["birthday"])
        ):
            raise invalid(f"Param {where}[birthday] must be YYYY-MM-DD")
        if _present(contact, "org"):
            _expect_keys(f"{where}[org]", contact["org"], ("company", "department", "title"))
        for part, keys in _CONTACT_PARTS.items():
            _objects(f"{where}[{part}]", contact.get(part), keys)


def _validate_interactive(value: Any) -> None:
    interactive = _expect_keys("interactive", value, {"type", "header", "body", "footer", "action"})
    kind = _enum("interactive[type]", interactive.get("type"), _INTERACTIVE_TYPES)
    if kind != "product" or _present(interactive, "body"):  # body: "Optional for type product"
        body = _expect_keys("interactive[body]", interactive.get("body"), {"text"})
        _string("interactive[body][text]", body.get("text"), max_len=4096 if kind == "list" else 1024)
    if _present(interactive, "footer"):
        footer = _expect_keys("interactive[footer]", interactive["footer"], {"text"})
        _string("interactive[footer][text]", footer.get("text"), max_len=60)
    if _present(interactive, "header"):
        header = _expect_keys(
            "interactive[header]", interactive["header"], {"type", "text", "image", "video", "document"}
        )
        htype = _enum("interactive[header][type]", header.get("type"), ("text", "image", "video", "document"))
        if htype == "text":
            _string("interactive[header][text]", header.get("text"), max_len=60)
        elif not isinstance(header.get(htype), dict):
            raise invalid(f"Param interactive[header][{htype}] is required for a {htype} header")
    action = interactive.get("action")
    if not isinstance(action, dict):
        raise invalid("Param interactive[action] is required and must be a JSON object")
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, (list, tuple)) or not 1 <= len(buttons) <= 3:
            raise invalid("Param interactive[action][buttons] must hold 1 to 3 buttons")
        for i, button in enumerate(buttons):
            where = f"interactive[action][buttons][{i}]"
            button = _expect_keys(where, button, {"type", "reply"})
            _enum(f"{where}[type]", button.get("type"), ("reply",))
            reply = _expect_keys(f"{where}[reply]", button.get("reply"), {"id", "title"})
            _string(f"{where}[reply][id]", reply.get("id"), max_len=256)
            _string(f"{where}[reply][title]", reply.get("title"), max_len=20)
    elif kind == "list":
        _string("interactive[action][button]", action.get("button"), max_len=20)
        sections = action.get("sections")
        if not isinstance(sections, (list, tuple)) or not 1 <= len(sections) <= 10:
            raise invalid("Param interactive[action][sections] must hold 1 to 10 sections")
        rows_total = 0
        for i, section in enumerate(sections):
            where = f"interactive[action][sections][{i}]"
            section = _expect_keys(where, section, {"title", "rows", "product_items"})
            _string(f"{where}[title]", section.get("title"), max_len=24, required=len(sections) > 1)
            rows = _objects(f"{where}[rows]", section.get("rows"), {"id", "title", "description"})
            if not rows:
                raise invalid(f"Param {where}[rows] must hold at least one row")
            rows_total += len(rows)
            for j, row in enumerate(rows):
                _string(f"{where}[rows][{j}][id]", row.get("id"), max_len=200)
                _string(f"{where}[rows][{j}][title]", row.get("title"), max_len=24)
                _string(f"{where}[rows][{j}][description]", row.get("description"), max_len=72, required=False)
        if rows_total > 10:
            raise invalid("Param interactive[action][sections] may hold at most 10 rows in total")
    elif kind == "cta_url":
        _enum("interactive[action][name]", action.get("name"), ("cta_url",))
        parameters = _expect_keys("interactive[action][parameters]", action.get("parameters"), {"display_text", "url"})
        _string("interactive[action][parameters][display_text]", parameters.get("display_text"), max_len=20)
        _http_url("interactive[action][parameters][url]", parameters.get("url"))


def _validate_reaction(value: Any) -> None:
    reaction = _expect_keys("reaction", value, {"message_id", "emoji"})
    _string("reaction[message_id]", reaction.get("message_id"))
    if not isinstance(reaction.get("emoji"), str):  # "" removes a reaction
        raise invalid("Param reaction[emoji] is required and must be a string")


def _validate_template(value: Any) -> None:
    template = _expect_keys("template", value, {"name", "language", "components"})
    language = template.get("language")
    if isinstance(language, dict):
        _expect_keys("template[language]", language, {"code", "policy"})
    if not isinstance(template.get("name"), str) or not isinstance((language or {}).get("code"), str):
        raise invalid("Param template requires name and language.code")
    if _present(template, "components") and not isinstance(template["components"], (list, tuple)):
        raise invalid("Param template[components] must be an array")


def send_message(
    phone: SimPhone,
    body: Any,
    uploaded: Mapping[str, str] | None = None,
    *,
    templates: Sequence[SimTemplate] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Validate a send as Meta documents each type; record it in `phone.sent`.

    `uploaded` maps the ids of media uploaded on this number to their media type: a media object's
    `id` must be one of them (else 100 "... is not a valid whatsapp business account media
    attachment ID"); whether the type fits is found out later, as on Meta (a `failed` status
    131053, see `planned_statuses`).

    `templates` (the WABA's): a template send must name an approved translation with the right
    parameters (templates.py: 132001, 132015, 132016, 132000, 132012); the recorded send gets
    `rendered`, what the customer sees. `now` (the simulator's clock): a free-form message to a
    customer whose last message is 24 hours old or more fails with 131047 when the phone
    `enforce_window`s (see SimPhone.window_error)."""
    body = _expect_keys("body", body, _TOP_KEYS)
    if body.get("messaging_product") != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    if _present(body, "recipient_type"):
        _enum("recipient_type", body["recipient_type"], ("individual", "group"))
    to, recipient = body.get("to"), body.get("recipient")
    if to is None and recipient is None:
        raise invalid("Param to must be a phone number")
    if to is not None and (not isinstance(to, str) or not re.fullmatch(r"\+?\d{5,15}", to)):
        raise invalid("Param to must be a phone number")
    if recipient is not None and (not isinstance(recipient, str) or not _BSUID.fullmatch(recipient)):
        raise invalid("Param recipient must be a business-scoped user id (e.g. US.13491208655302741918)")
    kind = body.get("type", "text")
    if kind not in MESSAGE_TYPES:
        raise invalid(f"Param type must be one of {', '.join(MESSAGE_TYPES)}")
    if kind not in body:
        raise invalid(f"Param {kind} is required for type {kind}")
    if kind == "text":
        text = _expect_keys("text", body["text"], {"body", "preview_url"})
        if not isinstance(text.get("body"), str) or not text["body"] or len(text["body"]) > 4096:
            raise invalid("Param text[body] must be 1 to 4096 characters")
        if _present(text, "preview_url") and not isinstance(text["preview_url"], bool):
            raise invalid("Param text[preview_url] must be a boolean")
    elif kind in MEDIA_TYPES:
        _validate_media(kind, body[kind], uploaded or {})
    elif kind == "location":
        _validate_location(body["location"])
    elif kind == "contacts":
        _validate_contacts(body["contacts"])
    elif kind == "interactive":
        _validate_interactive(body["interactive"])
        if body["interactive"].get("type") == "call_permission_request":
            permissions.check_request(phone, recipient_key(body), time.time() if now is None else now)
    elif kind == "reaction":
        _validate_reaction(body["reaction"])
    else:
        _validate_template(body["template"])
    if _present(body, "context"):
        context = _expect_keys("context", body["context"], {"message_id"})
        _string("context[message_id]", context.get("message_id"))
    if _present(body, "biz_opaque_callback_data"):
        _string("biz_opaque_callback_data", body["biz_opaque_callback_data"], max_len=512)
    rendered = None
    if kind == "template" and templates is not None:
        rendered = check_template_send(
            templates, body["template"], lambda media_kind, media: _validate_media(media_kind, media, uploaded or {})
        )
    # a call permission request: the interactive one, or a template with the component (a plain
    # template is an ordinary message: no limit counted, nothing the customer can grant)
    asks_permission = (kind == "interactive" and body["interactive"].get("type") == "call_permission_request") or (
        rendered is not None and bool(rendered.get("call_permission_request"))
    )
    if asks_permission and kind == "template":
        permissions.check_request(phone, recipient_key(body), time.time() if now is None else now)
    outside = (
        kind != "template"
        and now is not None
        and phone.enforce_window
        and not window_open(phone, recipient_key(body), now)
    )
    if outside and phone.window_error == "response":
        title, details = STATUS_ERRORS[131047]
        raise GraphFail(131047, f"(#131047) {title}", details=details)
    wamid = "wamid." + secrets.token_urlsafe(24)
    if asks_permission:
        permissions.record_request(phone, recipient_key(body), time.time() if now is None else now)
    phone.sent.append({"id": wamid, **body, **({"rendered": rendered} if rendered is not None else {})})
    if outside:
        phone.window_closed.append(wamid)
    if to is not None:
        contact = {"input": to, "wa_id": to.lstrip("+")}
    else:
        contact = {"input": str(recipient), "user_id": str(recipient)}
    return {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]}


def planned_statuses(
    phone: SimPhone, sent: dict[str, Any], uploaded: Mapping[str, str]
) -> list[tuple[str, int | None]]:
    """The statuses Meta reports for an accepted send, as (status, error code or None), in order.

    - a free-form message sent outside the customer service window: `failed` 131047 (error
      codes: "Re-engagement message", reported in the status webhook);
    - media sent by `id` whose type does not fit the message type: `failed` 131053 (a mismatched
      MIME type, media page);
    - a reaction: only `sent` (reaction messages page: no delivered or read webhooks); to a
      message this number never received: `failed` 131009 (same page);
    - a recipient in `phone.undeliverable`: `sent`, then `failed` with its code;
    - otherwise each of `phone.auto_statuses`."""
    if sent.get("id") in phone.window_closed:
        return [("failed", 131047)]
    kind = sent.get("type", "text")
    media = sent.get(kind) if kind in MEDIA_TYPES else None
    if isinstance(media, dict) and _present(media, "id") and uploaded.get(media["id"]) != kind:
        return [("failed", 131053)]
    if kind == "reaction":
        return [("sent", None)] if sent["reaction"]["message_id"] in phone.received else [("failed", 131009)]
    wa_id = str(sent.get("to") or sent.get("recipient")).lstrip("+")
    if wa_id in phone.undeliverable:
        return [("sent", None), ("failed", phone.undeliverable[wa_id])]
    return [(status, None) for status in phone.auto_statuses]


def mark_read(phone: SimPhone, body: Any) -> dict[str, Any]:
    """`POST /{phone_number_id}/messages` with `status: read` (mark as read), optionally with a
    typing indicator. Sources: developers.facebook.com/docs/whatsapp/cloud-api/guides/mark-message-as-read,
    developers.facebook.com/docs/whatsapp/cloud-api/typing-indicators."""
    body = _expect_keys("body", body, {"messaging_product", "status", "message_id", "typing_indicator"})
    if body.get("messaging_product") != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    if body.get("status") != "read":
        raise invalid("Param status must be read")
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise invalid("Param message_id is required")
    if message_id not in phone.received:
        raise invalid(f"Param message_id {message_id} is not a message received on this phone number")
    if "typing_indicator" in body:
        typing = _expect_keys("typing_indicator", body["typing_indicator"], {"type"})
        if typing.get("type") != "text":
            raise invalid("Param typing_indicator[type] must be text")
    phone.read.append(dict(body))
    return {"success": True}


# `GET /{phone_number_id}` without `fields` answers these; the WABA's list answers more.
# Source: developers.facebook.com/docs/graph-api/reference/whats-app-business-account-to-number-current-status
# and .../whatsapp/business-management-api/manage-phone-numbers (example responses).
_PHONE_DEFAULT_FIELDS = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
    "platform_type",
    "throughput",
    "id",
)


_PHONE_LIST_FIELDS = _PHONE_DEFAULT_FIELDS


# Every field of the node in Graph's reference (whats-app-business-account-to-number-current-status);
# fields the simulator has no value for are left out of the answer, as Graph leaves out unset ones.
_PHONE_FIELDS = {
    *_PHONE_DEFAULT_FIELDS,
    "name_status",
    "new_name_status",
    "messaging_limit_tier",
    "webhook_configuration",
    "is_official_business_account",
    "account_mode",
    "status",
    "conversational_automation",
    "quality_score",
    "is_on_biz_app",
    "is_pin_enabled",
    "is_preverified_number",
    "search_visibility",
    "eligibility_for_api_business_global_search",
    "health_status",
    "certificate",
    "new_certificate",
    "last_onboarded_time",
    "country_code",
    "country_dial_code",
    "whatsapp_business_manager_messaging_limit",
}


def phone_view(phone: SimPhone, fields: str | None, *, default: tuple[str, ...]) -> dict[str, Any]:
    """A phone number node; `fields=a,b` picks fields, an unknown one is error 100 as on Graph."""
    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else list(default)
    unknown = [f for f in wanted if f not in _PHONE_FIELDS]
    if unknown:
        raise GraphFail(
            100, f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type (WhatsAppBusinessPhoneNumber)"
        )
    tier = next(
        (
            t
            for limit, t in (
                (100_000, "TIER_100K"),
                (10_000, "TIER_10K"),
                (2_000, "TIER_2K"),
                (1_000, "TIER_1K"),
                (250, "TIER_250"),
            )
            if phone.messaging_limit >= limit
        ),
        "TIER_50",
    )
    digits = phone.display_phone_number.lstrip("+")
    node = {
        "verified_name": phone.verified_name,
        "code_verification_status": "VERIFIED",
        "display_phone_number": f"+{digits[:1]} {digits[1:4]}-{digits[4:7]}-{digits[7:]}"
        if len(digits) == 11
        else phone.display_phone_number,
        "quality_rating": phone.quality_rating,
        "platform_type": "CLOUD_API",
        "throughput": {"level": "STANDARD"},
        "id": phone.phone_number_id,
        "name_status": "APPROVED",
        "messaging_limit_tier": tier,
        "webhook_configuration": {"application": "https://example.invalid/webhook"},
        "is_official_business_account": False,
        "account_mode": "LIVE",
        "status": "CONNECTED",
        "is_on_biz_app": False,
        "is_pin_enabled": False,
        "is_preverified_number": False,
    }
    return {k: node[k] for k in wanted if k != "id" and k in node} | {"id": phone.phone_number_id}


_BSUID = re.compile(r"[A-Z]{2}(\.ENT)?\.[A-Za-z0-9]{1,128}")


def call_permissions_view(phone: SimPhone, user_wa_id: str | None, recipient: str | None = None) -> dict[str, Any]:
    """`GET /{phone_number_id}/call_permissions?user_wa_id=` (or `recipient=<BSUID>` for a user
    known only by a business-scoped id). Source:
    developers.facebook.com/docs/whatsapp/cloud-api/calling/user-call-permissions (response shape,
    limits: 1 request per 24 h and 2 per 7 days, 100 connected calls per 24 h) and
    developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids/."""
    if not user_wa_id and not recipient:
        raise invalid("The parameter user_wa_id or recipient is required")
    if user_wa_id and not re.fullmatch(r"\d{5,15}", user_wa_id):
        raise invalid("Param user_wa_id must be a WhatsApp user id (digits)")
    if recipient and not _BSUID.fullmatch(recipient):
        raise invalid("Param recipient must be a business-scoped user id (e.g. US.13491208655302741918)")
    user = user_wa_id or recipient
    assert user is not None
    granted = phone.call_permissions.get(user)
    now = int(time.time())
    if granted and granted.get("status") == "temporary" and int(granted.get("expiration_time", 0)) <= now:
        granted = None
    day, week = permissions.request_usage(phone, user, now)
    permission: dict[str, Any] = {"status": "no_permission"}
    if granted:
        permission = {"status": granted["status"]}
        if granted["status"] == "temporary":
            permission["expiration_time"] = int(granted["expiration_time"])
    return {
        "messaging_product": "whatsapp",
        "permission": permission,
        "actions": [
            {
                "action_name": "send_call_permission_request",
                "can_perform_action": granted is None and day < 1 and week < 2,
                "limits": [
                    {"time_period": "PT24H", "max_allowed": 1, "current_usage": day},
                    {"time_period": "P7D", "max_allowed": 2, "current_usage": week},
                ],
            },
            {
                "action_name": "start_call",
                "can_perform_action": granted is not None,
                "limits": [{"time_period": "PT24H", "max_allowed": 100, "current_usage": 0}],
            },
        ],
    }


def call_action(phone: SimPhone, body: Any) -> dict[str, Any]:
    if phone.sip_status == "ENABLED":
        raise GraphFail(131055)
    if phone.calling.get("status") != "ENABLED":
        raise GraphFail(138000)
    body = _expect_keys(
        "body", body, {"messaging_product", "to", "call_id", "action", "session", "biz_opaque_callback_data"}
    )
    if body.get("messaging_product") != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    action = body.get("action")
    if action not in ("connect", "pre_accept", "accept", "reject", "terminate"):
        raise invalid("Param action must be connect, pre_accept, accept, reject or terminate")
    if action == "connect":
        call_id = "wacid." + secrets.token_urlsafe(24)
        phone.calls[call_id] = "active"
        return {"messaging_product": "whatsapp", "calls": [{"id": call_id}]}
    call_id = body.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid("Param call_id is required")
    # Only calls Meta announced (a connect webhook) or placed (action connect) can be acted on;
    # the calling troubleshooting page lists no dedicated code, so it is 100 naming call_id.
    state = phone.calls.get(call_id)
    if state is None:
        raise invalid(f"Param call_id {call_id} is not a call on this phone number")
    if state == "ended":
        raise invalid(f"Param call_id {call_id} refers to a call that has already ended")
    if action in ("reject", "terminate"):
        phone.calls[call_id] = "ended"
    return {"messaging_product": "whatsapp", "success": True}
