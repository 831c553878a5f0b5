"""Message templates, as Meta keeps, lists, checks and announces them; and the 24-hour window.

Sources:
- TEMPLATES: developers.facebook.com/documentation/business-messaging/whatsapp/templates/template-management/
  (`GET /{waba_id}/message_templates`: `data` with name, parameter_format, components, language,
  status, category, id; Graph's cursor `paging`; filters and `summary` as pywa sends them)
- COMPONENTS: .../whatsapp/templates/components/ (HEADER TEXT|IMAGE|VIDEO|DOCUMENT|LOCATION, BODY
  with `{{1}}`.. and `example.body_text`, FOOTER, BUTTONS: URL with a `{{1}}` suffix, QUICK_REPLY,
  PHONE_NUMBER, COPY_CODE)
- SEND: .../whatsapp/messages/template-messages/ (`components` of type header / body / button with
  `sub_type` and `index`)
- ERRORS: developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/
  (132000 parameter count mismatch, 132001 template does not exist in the language or is not
  approved, 132012 parameter format mismatch, 132015 paused, 132016 disabled; 131047 re-engagement)
- STATUS_WEBHOOK: developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update
- CPR: .../whatsapp/templates/utility-templates/utility-call-permission-request-templates/ and
  .../marketing-templates/call-permission-request-message-template (`POST /{waba_id}/message_templates`
  with a body and a `{"type": "call_permission_request"}` component; MARKETING or UTILITY only, a
  non-empty body, no buttons beside it; sending one asks the customer for a call permission)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from thoth_pbx.sandbox.meta.state import GraphFail, SimApp, SimPhone, SimToken, check_waba_reach, invalid
from thoth_pbx.sandbox.meta.webhooks import StatusDelivery, StatusPoster, delivery

WINDOW_S = 24 * 3600  # the customer service window: 24 hours after the customer's last message

STATUSES = (
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "IN_APPEAL",
    "PENDING_DELETION",
    "ARCHIVED",
    "LIMIT_EXCEEDED",
)
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
# events of the status webhook that leave a template in another status than the event's name
_EVENT_STATUS = {"REINSTATED": "APPROVED", "UNARCHIVED": "APPROVED", "FLAGGED": "APPROVED"}
EVENTS = (*STATUSES, *_EVENT_STATUS)
TEMPLATE_FIELD = "message_template_status_update"

# fields of the template node (whats-app-business-hsm reference; pywa asks for all of these)
DEFAULT_FIELDS = ("name", "parameter_format", "components", "language", "status", "category", "id")
_FIELDS = {
    *DEFAULT_FIELDS,
    "previous_category",
    "correct_category",
    "rejected_reason",
    "quality_score",
    "sub_category",
    "library_template_name",
    "message_send_ttl_seconds",
    "cta_url_link_tracking_opted_out",
    "degrees_of_freedom_spec",
}
_MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT")
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")
TEMPLATE_LIMIT = 250  # templates per WABA of a business that is not verified
# the call permission request component (CPR), stored upper-case like the other component types
CALL_PERMISSION_REQUEST = "CALL_PERMISSION_REQUEST"
_COMPONENT_TYPES = ("HEADER", "BODY", "FOOTER", "BUTTONS", CALL_PERMISSION_REQUEST)


@dataclass
class SimTemplate:
    """One template translation (Meta keeps one node per name + language)."""

    id: str
    waba_id: str
    name: str
    language: str
    status: str
    category: str
    components: list[dict[str, Any]]
    parameter_format: str = "POSITIONAL"
    rejected_reason: str = "NONE"

    def view(self, fields: str | None = None) -> dict[str, Any]:
        """The node as Graph answers it; `fields=a,b` picks fields (unknown -> 100)."""
        wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else list(DEFAULT_FIELDS)
        unknown = [f for f in wanted if f not in _FIELDS]
        if unknown:
            raise GraphFail(
                100, f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type (WhatsAppMessageTemplate)"
            )
        node: dict[str, Any] = {
            "name": self.name,
            "parameter_format": self.parameter_format,
            "components": json.loads(json.dumps(self.components)),
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "rejected_reason": self.rejected_reason,
        }
        return {k: node[k] for k in wanted if k in node} | {"id": self.id}

    def expected(self) -> dict[str, int]:
        """How many parameters a send must give: 'header', 'body' and 'button:<index>'."""
        counts = {"header": 0, "body": 0}
        for component in self.components:
            kind = component.get("type")
            if kind == "HEADER":
                media = component.get("format") in (*_MEDIA_FORMATS, "LOCATION")
                counts["header"] = 1 if media else _placeholders(component.get("text", ""))
            elif kind == "BODY":
                counts["body"] = _placeholders(component.get("text", ""))
            elif kind == "BUTTONS":
                for i, button in enumerate(component.get("buttons", [])):
                    takes = (button.get("type") == "URL" and _placeholders(button.get("url", ""))) or (
                        button.get("type") == "COPY_CODE"
                    )
                    counts[f"button:{i}"] = 1 if takes else 0
        return counts

    def part(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.components if c.get("type") == kind), None)

    def buttons(self) -> list[dict[str, Any]]:
        part = self.part("BUTTONS")
        return list(part.get("buttons", [])) if part else []

    @property
    def asks_call_permission(self) -> bool:
        """Sending it is a call permission request (CPR): limits counted, a reply possible."""
        return self.part(CALL_PERMISSION_REQUEST) is not None


def _placeholders(text: str) -> int:
    return len(set(_PLACEHOLDER.findall(text)))


def _fill(text: str, values: list[str]) -> str:
    def value(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return values[n - 1] if 0 < n <= len(values) else match.group(0)

    return _PLACEHOLDER.sub(value, text)


def check_components(components: Any, category: str | None = None) -> list[dict[str, Any]]:
    """A template definition's components, checked (bad -> ValueError naming the part). Types are
    taken in either case, as Meta's creation examples write both `BODY` and `body`, and kept
    upper-case as Graph lists them. A `call_permission_request` component follows CPR's three
    rules: a MARKETING or UTILITY `category`, a non-empty body, no buttons beside it."""
    if not isinstance(components, list) or not components:
        raise ValueError("components must be a non-empty list")
    seen: set[str] = set()
    for i, component in enumerate(components):
        raw = component.get("type") if isinstance(component, dict) else None
        kind = raw.upper() if isinstance(raw, str) else None
        if kind not in _COMPONENT_TYPES or kind in seen:
            raise ValueError(
                f"components[{i}].type must be one of HEADER, BODY, FOOTER, BUTTONS, CALL_PERMISSION_REQUEST, "
                "each at most once"
            )
        assert isinstance(component, dict)
        component["type"] = kind
        seen.add(kind)
        if kind == "HEADER" and component.get("format") not in ("TEXT", *_MEDIA_FORMATS, "LOCATION"):
            raise ValueError(f"components[{i}].format must be TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION")
        if kind in ("BODY", "FOOTER") and not isinstance(component.get("text"), str):
            raise ValueError(f"components[{i}].text is required")
        if kind == "BUTTONS":
            buttons = component.get("buttons")
            if not isinstance(buttons, list) or not buttons:
                raise ValueError(f"components[{i}].buttons must be a non-empty list")
            for j, button in enumerate(buttons):
                if not isinstance(button, dict) or button.get("type") not in (
                    "URL",
                    "QUICK_REPLY",
                    "PHONE_NUMBER",
                    "COPY_CODE",
                ):
                    raise ValueError(
                        f"components[{i}].buttons[{j}].type must be URL, QUICK_REPLY, PHONE_NUMBER or COPY_CODE"
                    )
    if "BODY" not in seen:
        raise ValueError("a template needs a BODY component")
    if CALL_PERMISSION_REQUEST in seen:
        if category not in ("MARKETING", "UTILITY"):
            raise ValueError(
                f"a call_permission_request component is allowed in MARKETING or UTILITY templates only, not {category}"
            )
        body = next(c for c in components if c["type"] == "BODY")
        if not str(body.get("text") or "").strip():
            raise ValueError("a call permission request template needs a non-empty body text")
        if "BUTTONS" in seen:
            raise ValueError("a call_permission_request component cannot be combined with buttons")
    return components


# ---- the seeded set (documented in docs/meta.md and /tmp/helpers/sim13.md)


def seed_templates() -> list[dict[str, Any]]:
    """The templates `seeded()` gives the seeded WABA, in id order."""
    return [
        {
            "name": "hello_world",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
                {
                    "type": "BODY",
                    "text": "Welcome and congratulations!! This message demonstrates your ability to send a "
                    "WhatsApp message notification from the Cloud API, hosted by Meta. Thank you for taking "
                    "the time to test with us.",
                },
                {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"},
            ],
        },
        {
            "name": "order_update",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {
                    "type": "BODY",
                    "text": "Hi {{1}}, your order {{2}} has shipped.",
                    "example": {"body_text": [["Anna", "#1234"]]},
                }
            ],
        },
        {
            "name": "order_update",
            "language": "ru",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {
                    "type": "BODY",
                    "text": "Здравствуйте, {{1}}! Ваш заказ {{2}} отправлен.",
                    "example": {"body_text": [["Анна", "#1234"]]},
                }
            ],
        },
        {
            "name": "invoice",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {
                    "type": "HEADER",
                    "format": "DOCUMENT",
                    "example": {"header_handle": ["https://scontent.whatsapp.net/v/t61/invoice-sample.pdf"]},
                },
                {"type": "BODY", "text": "Your invoice {{1}} is attached.", "example": {"body_text": [["INV-1"]]}},
                {"type": "FOOTER", "text": "Thank you for your business"},
            ],
        },
        {
            "name": "track_parcel",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {"type": "BODY", "text": "Your parcel is on its way."},
                {
                    "type": "BUTTONS",
                    "buttons": [
                        {
                            "type": "URL",
                            "text": "Track it",
                            "url": "https://track.example.com/p/{{1}}",
                            "example": ["https://track.example.com/p/ABC123"],
                        },
                        {"type": "QUICK_REPLY", "text": "Stop updates"},
                    ],
                },
            ],
        },
        {
            "name": "promo",
            "language": "en_US",
            "status": "PAUSED",
            "category": "MARKETING",
            "components": [
                {"type": "BODY", "text": "Spring sale: {{1}} off everything!", "example": {"body_text": [["20%"]]}}
            ],
        },
        {
            "name": "old_offer",
            "language": "en_US",
            "status": "REJECTED",
            "category": "MARKETING",
            "rejected_reason": "PROMOTIONAL",
            "components": [{"type": "BODY", "text": "Last chance to buy!"}],
        },
        {
            "name": "welcome_back",
            "language": "en_US",
            "status": "PENDING",
            "category": "MARKETING",
            "components": [{"type": "BODY", "text": "Welcome back, {{1}}!", "example": {"body_text": [["Anna"]]}}],
        },
        {
            "name": "legacy_notice",
            "language": "en_US",
            "status": "DISABLED",
            "category": "MARKETING",
            "components": [{"type": "BODY", "text": "Our terms have changed."}],
        },
    ]


# ---- GET /{waba_id}/message_templates


def _cursor(template_id: str) -> str:
    return base64.urlsafe_b64encode(template_id.encode()).decode().rstrip("=")


def _uncursor(cursor: str, where: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid(f"Param {where} is not a valid cursor") from None


def _listed(values: str | None) -> set[str] | None:
    return {v.strip() for v in values.split(",") if v.strip()} if values else None


def list_templates(templates: list[SimTemplate], query: Mapping[str, str], url: URL) -> dict[str, Any]:
    """One page of a WABA's templates in Graph's shape: `data`, `paging` with cursors (and `next` /
    `previous` links only when there is such a page), `summary` when asked. Filters: `status`,
    `category`, `language` (comma lists), `name`, `content`, `name_or_content` (case-insensitive
    parts); `limit` (default 25), `after` / `before` cursors; `fields`."""
    statuses, categories, languages = (_listed(query.get(k)) for k in ("status", "category", "language"))
    name, content = (query.get("name") or "").lower(), (query.get("content") or "").lower()
    either = (query.get("name_or_content") or "").lower()

    def body(t: SimTemplate) -> str:
        part = t.part("BODY")
        return str(part.get("text", "")).lower() if part else ""

    chosen = [
        t
        for t in templates
        if (statuses is None or t.status in statuses)
        and (categories is None or t.category in categories)
        and (languages is None or t.language in languages)
        and name in t.name.lower()
        and content in body(t)
        and (either in t.name.lower() or either in body(t))
    ]
    raw_limit = query.get("limit", "25")
    if not raw_limit.isdigit() or not 0 < int(raw_limit) <= 1000:
        raise invalid("Param limit must be a number from 1 to 1000")
    limit = int(raw_limit)
    ids = [t.id for t in chosen]
    start, end = 0, len(chosen)
    if query.get("after"):
        after = _uncursor(query["after"], "after")
        start = ids.index(after) + 1 if after in ids else len(chosen)
    elif query.get("before"):
        before = _uncursor(query["before"], "before")
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
    page = chosen[start : start + limit] if not query.get("before") else chosen[start:end]
    answer: dict[str, Any] = {"data": [t.view(query.get("fields")) for t in page]}
    if page:
        paging: dict[str, Any] = {"cursors": {"before": _cursor(page[0].id), "after": _cursor(page[-1].id)}}
        plain = {k: v for k, v in url.query.items() if k not in ("after", "before")}
        last = chosen.index(page[-1])
        if last + 1 < len(chosen):
            paging["next"] = str(url.with_query({**plain, "after": _cursor(page[-1].id)}))
        if chosen.index(page[0]) > 0:
            paging["previous"] = str(url.with_query({**plain, "before": _cursor(page[0].id)}))
        answer["paging"] = paging
    wanted = _listed(query.get("summary")) or set()
    summary = {
        "total_count": len(chosen),
        "message_template_count": len(templates),
        "message_template_limit": TEMPLATE_LIMIT,
        "are_translations_complete": True,
    }
    if wanted:
        answer["summary"] = {k: v for k, v in summary.items() if k in wanted}
    return answer


# ---- POST /{phone_number_id}/messages with type template


def _not_found(name: str, code: str) -> GraphFail:
    return GraphFail(
        132001,
        "(#132001) Template name does not exist in the translation",
        details=f"template name ({name}) does not exist in {code}",
        http_status=404,
    )


def _count_mismatch(where: str, given: int, expected: int) -> GraphFail:
    return GraphFail(
        132000,
        "(#132000) Number of parameters does not match the expected number of params",
        details=f"{where}: number of localizable_params ({given}) does not match the expected number of params ({expected})",
    )


def _format_mismatch(where: str, expected: str, received: str) -> GraphFail:
    return GraphFail(
        132012,
        "(#132012) Parameter format does not match format in the created template",
        details=f"{where}: Format mismatch, expected {expected}, received {received}",
    )


def find_template(templates: Iterable[SimTemplate], name: str, code: str) -> SimTemplate:
    """The sendable translation, or the error Meta gives: 132001 for an unknown name or language
    and for a translation that is not approved (pending, rejected, ...), 132015 paused, 132016
    disabled (ERRORS)."""
    template = next((t for t in templates if t.name == name and t.language == code), None)
    if template is None:
        raise _not_found(name, code)
    if template.status == "PAUSED":
        raise GraphFail(
            132015,
            "(#132015) Template is Paused",
            details="Template is paused due to low quality so it cannot be sent in a template message.",
        )
    if template.status == "DISABLED":
        raise GraphFail(
            132016,
            "(#132016) Template is disabled",
            details="Template has been paused too many times due to low quality and is now permanently disabled.",
        )
    if template.status != "APPROVED":
        raise _not_found(name, code)
    return template


def _param_value(where: str, param: Any) -> str:
    """What the customer sees for one parameter (text, currency / date_time fallback, payload)."""
    if not isinstance(param, dict):
        raise invalid(f"Param {where} must be a JSON object")
    kind = param.get("type")
    if kind == "text":
        value = param.get("text")
    elif kind in ("currency", "date_time"):
        value = (param.get(kind) or {}).get("fallback_value") if isinstance(param.get(kind), dict) else None
    elif kind in ("payload", "coupon_code"):
        value = param.get(kind)
    else:
        raise invalid(f"Param {where}[type] must be text, currency, date_time, payload or coupon_code here")
    if not isinstance(value, str) or not value:
        raise invalid(f"Param {where} needs a non-empty {kind} value")
    return value


def check_template_send(
    templates: Iterable[SimTemplate],
    value: dict[str, Any],
    validate_media: Callable[[str, Any], None],
) -> dict[str, Any]:
    """Check a template send against the stored template (SEND, ERRORS) and return what the
    customer sees: `{"header", "body", "footer", "buttons", "text", "category", "template_id"}`.
    `validate_media(kind, object)` checks a media header parameter like a media message."""
    name, code = value["name"], value["language"]["code"]
    template = find_template(templates, name, code)
    given: dict[str, list[Any]] = {}
    for i, component in enumerate(value.get("components") or []):
        where = f"template[components][{i}]"
        if not isinstance(component, dict):
            raise invalid(f"Param {where} must be a JSON object")
        kind = str(component.get("type", "")).lower()
        params = component.get("parameters") or []
        if not isinstance(params, list):
            raise invalid(f"Param {where}[parameters] must be an array")
        if kind in ("header", "body"):
            if kind in given:
                raise invalid(f"Param {where}: only one {kind} component is allowed")
            given[kind] = params
        elif kind == "button":
            index = str(component.get("index"))
            if isinstance(component.get("index"), bool) or not index.isdigit():
                raise invalid(f"Param {where}[index] must be the button's index (0-9)")
            buttons = template.buttons()
            if int(index) >= len(buttons):
                raise invalid(f"Param {where}[index]: the template has no button at index {index}")
            sub_type = str(component.get("sub_type", "")).lower()
            button_type = str(buttons[int(index)].get("type", ""))
            if sub_type != button_type.lower():
                raise _format_mismatch(f"button at index {index}", button_type, sub_type.upper() or "UNKNOWN")
            given[f"button:{int(index)}"] = params
        else:
            raise invalid(f"Param {where}[type] must be header, body or button")
    for key, want in template.expected().items():
        if key.startswith("button:") and want == 0:
            continue  # a quick reply's payload (or a static button) is optional
        got = len(given.get(key, []))
        if got != want:
            where = f"button at index {key.split(':')[1]}" if key.startswith("button:") else key
            raise _count_mismatch(where, got, want)
    return _render(template, given, validate_media)


def _render(
    template: SimTemplate, given: dict[str, list[Any]], validate_media: Callable[[str, Any], None]
) -> dict[str, Any]:
    shown: dict[str, Any] = {"header": None, "body": "", "footer": None, "buttons": []}
    header = template.part("HEADER")
    if header is not None:
        fmt = str(header.get("format"))
        params = given.get("header", [])
        if fmt == "TEXT":
            values = [_param_value(f"header[parameters][{i}]", p) for i, p in enumerate(params)]
            shown["header"] = _fill(str(header.get("text", "")), values)
        else:
            param = params[0]
            kind = param.get("type") if isinstance(param, dict) else None
            if str(kind).upper() != fmt:
                raise _format_mismatch("header", fmt, str(kind).upper() if kind else "UNKNOWN")
            assert isinstance(kind, str)
            if fmt == "LOCATION":
                shown["header"] = {"format": fmt, **dict(param.get("location") or {})}
            else:
                validate_media(kind, param.get(kind))
                shown["header"] = {"format": fmt, **dict(param[kind])}
    values = [_param_value(f"body[parameters][{i}]", p) for i, p in enumerate(given.get("body", []))]
    body = template.part("BODY")
    shown["body"] = _fill(str(body.get("text", "")), values) if body else ""
    footer = template.part("FOOTER")
    shown["footer"] = str(footer.get("text")) if footer else None
    for i, button in enumerate(template.buttons()):
        params = given.get(f"button:{i}", [])
        entry = {"type": button.get("type"), "text": button.get("text")}
        if button.get("type") == "URL":
            entry["url"] = _fill(str(button.get("url", "")), [_param_value(f"button[{i}]", p) for p in params])
        elif params:
            entry["payload"] = _param_value(f"button[{i}]", params[0])
        shown["buttons"].append(entry)
    head = shown["header"] if isinstance(shown["header"], str) else None
    shown["text"] = "\n".join(part for part in (head, shown["body"], shown["footer"]) if part)
    shown["category"] = template.category
    shown["template_id"] = template.id
    if template.asks_call_permission:
        shown["call_permission_request"] = True  # the customer sees the request with its two answers
    return shown


# ---- the 24-hour customer service window


def customer_keys(message: Mapping[str, Any], contacts: Iterable[Any] = ()) -> list[str]:
    """The ids a customer's message opens the window for: its `from` (wa_id) and BSUID fields."""
    keys = [str(message.get(k)) for k in ("from", "from_user_id") if isinstance(message.get(k), str)]
    for contact in contacts:
        if isinstance(contact, dict) and contact.get("wa_id") == message.get("from"):
            keys.extend(str(contact[k]) for k in ("user_id",) if isinstance(contact.get(k), str))
    return [k.lstrip("+") for k in keys]


def recipient_key(body: Mapping[str, Any]) -> str:
    return str(body.get("to") or body.get("recipient") or "").lstrip("+")


def window_open(phone: SimPhone, customer: str, now: float) -> bool:
    last = phone.last_inbound.get(customer.lstrip("+"))
    return last is not None and now - last < WINDOW_S


# ---- the simulator's side (mixed into MetaSimulator)


@dataclass
class TemplateChange:
    """A status change to announce: the template and the webhook event."""

    template: SimTemplate
    event: str
    reason: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def status_update_change(change: TemplateChange, now: int) -> dict[str, Any]:
    """One `message_template_status_update` change (STATUS_WEBHOOK): event, message_template_id
    (a number), name, language, reason, category; `disable_info` when disabled."""
    template = change.template
    value: dict[str, Any] = {
        "event": change.event,
        "message_template_id": int(template.id),
        "message_template_name": template.name,
        "message_template_language": template.language,
        "reason": change.reason if change.reason is not None else "NONE",
        "message_template_category": template.category,
    }
    if change.event == "DISABLED":
        value["disable_info"] = {"disable_date": now}
    value.update(change.extra)
    return {"field": TEMPLATE_FIELD, "value": value}


class TemplateControl:
    """Templates per WABA, their Graph endpoints and status webhooks, and the customer service
    window. State lives on the simulator (`templates`, each phone's `last_inbound`)."""

    templates: dict[str, SimTemplate]
    phones: dict[str, SimPhone]
    apps: dict[str, SimApp]
    clock: Callable[[], float]
    status_poster: StatusPoster

    def add_template(
        self,
        waba_id: str,
        name: str,
        language: str,
        components: list[dict[str, Any]],
        *,
        status: str = "APPROVED",
        category: str = "UTILITY",
        rejected_reason: str = "NONE",
        template_id: str | None = None,
    ) -> SimTemplate:
        """Add (or replace, same name + language) a template of `waba_id`; returns it."""
        if not re.fullmatch(r"[a-z0-9_]{1,512}", name):
            raise ValueError("name must be lower-case letters, digits and underscores")
        if not re.fullmatch(r"[a-z]{2,3}(_[A-Za-z]{2,4})?", language):
            raise ValueError("language must be a code such as en_US or ru")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
        components = check_components(json.loads(json.dumps(components)), category)
        old = next(
            (t for t in self.templates.values() if (t.waba_id, t.name, t.language) == (waba_id, name, language)), None
        )
        if old is not None:
            del self.templates[old.id]
        new_id = template_id or (old.id if old else str(1_200_000_000_000_000 + len(self.templates) + 1))
        while new_id in self.templates:
            new_id = str(int(new_id) + 1)
        template = SimTemplate(
            new_id, waba_id, name, language, status, category, components, "POSITIONAL", rejected_reason
        )
        self.templates[new_id] = template
        return template

    def create_template(self, waba_id: str, body: Any) -> dict[str, Any]:
        """`POST /{waba_id}/message_templates` (TEMPLATES, CPR): `{name, language, category,
        components, parameter_format?}` -> `{id, status, category}`. A bad definition is Graph's
        100 naming the mistake; a name + language already there is 2388024. The simulator
        approves at once (Meta reviews first; `set_template_status` plays a review)."""
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object")
        name, language, category = body.get("name"), body.get("language"), body.get("category")
        for field_name, value in (("name", name), ("language", language), ("category", category)):
            if not isinstance(value, str) or not value:
                raise invalid(f"Param {field_name} is required")
        assert isinstance(name, str) and isinstance(language, str) and isinstance(category, str)
        if any((t.name, t.language) == (name, language) for t in self.templates_of(waba_id)):
            raise GraphFail(
                2388024,
                "(#2388024) Content in this language already exists",
                details=f"a template {name} in {language} already exists on this account",
            )
        components = body.get("components")
        if not isinstance(components, list):
            raise invalid("Param components must be a non-empty array")
        try:
            template = self.add_template(waba_id, name, language, components, category=category.upper())
        except ValueError as exc:
            raise invalid(f"Invalid parameter: {exc}") from None
        if body.get("parameter_format") in ("named", "NAMED", "positional", "POSITIONAL"):
            template.parameter_format = str(body["parameter_format"]).upper()
        return {"id": template.id, "status": template.status, "category": template.category}

    def template(self, waba_id: str, name: str, language: str) -> SimTemplate:
        found = next(
            (t for t in self.templates.values() if (t.waba_id, t.name, t.language) == (waba_id, name, language)), None
        )
        if found is None:
            raise ValueError(f"no template {name} ({language}) on WABA {waba_id}")
        return found

    def templates_of(self, waba_id: str) -> list[SimTemplate]:
        return [t for t in self.templates.values() if t.waba_id == waba_id]

    def set_template_status(
        self, template_id: str, event: str, *, reason: str | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Change a template's status as Meta's review does and queue the signed
        `message_template_status_update` webhook to every app with a callback URL subscribed to
        that field (drain with `drain_webhooks()`). `event` is a status or REINSTATED / UNARCHIVED
        / FLAGGED (the template stays or becomes APPROVED). Returns the delivery posted. Call it
        inside the running event loop."""
        template = self.templates.get(str(template_id))
        if template is None:
            raise ValueError(f"no template {template_id}")
        if event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}")
        template.status = _EVENT_STATUS.get(event, event)
        if event == "REJECTED":
            template.rejected_reason = reason or "NONE"
        now = int(self.clock())
        doc = delivery(
            template.waba_id,
            [status_update_change(TemplateChange(template, event, reason, extra or {}), now)],
            time=now,
        )
        body = json.dumps(doc).encode()
        deliveries = [
            StatusDelivery(app.callback_url, app.app_secret, body, template.id, f"template:{event}")
            for app in self.apps.values()
            if app.callback_url and TEMPLATE_FIELD in app.subscribed_fields
        ]
        if deliveries:
            self.status_poster.put(f"waba:{template.waba_id}", deliveries)
        return doc

    def template_graph(
        self, token: SimToken, method: str, parts: list[str], query: Mapping[str, str], url: URL, body: Any = None
    ) -> dict[str, Any] | None:
        """`GET /{waba_id}/message_templates`, `GET /{template_id}` and `POST
        /{waba_id}/message_templates` (create); None for other paths."""
        if method == "POST" and len(parts) == 2 and parts[1] == "message_templates":
            waba_id = parts[0]
            known = any(p.waba_id == waba_id for p in self.phones.values()) or bool(self.templates_of(waba_id))
            check_waba_reach(token, waba_id, known=known, method="POST")
            return self.create_template(waba_id, body)
        if method != "GET":
            return None
        if len(parts) == 2 and parts[1] == "message_templates":
            waba_id = parts[0]
            known = any(p.waba_id == waba_id for p in self.phones.values()) or bool(self.templates_of(waba_id))
            check_waba_reach(token, waba_id, known=known)
            return list_templates(self.templates_of(waba_id), query, url)
        if len(parts) == 1 and parts[0] in self.templates:
            template = self.templates[parts[0]]
            check_waba_reach(token, template.waba_id, known=True)
            return template.view(query.get("fields"))
        return None

    def customer_wrote(self, phone_number_id: str, customer: str, at: float | None = None) -> None:
        """The customer (wa_id or BSUID) wrote to the number at `at` (default: `clock()`): the
        24-hour window opens, as a messages webhook announced through `announce()` does."""
        phone = self.phones.get(phone_number_id)
        if phone is None:
            raise ValueError(f"unknown phone {phone_number_id}")
        phone.last_inbound[customer.lstrip("+")] = self.clock() if at is None else at

    def window_open(self, phone_number_id: str, customer: str) -> bool:
        """Whether a free-form message to `customer` would go out now (by `clock()`)."""
        return window_open(self.phones[phone_number_id], customer, self.clock())

    def note_inbound(self, value: Mapping[str, Any], phone: SimPhone) -> None:
        """A messages webhook value announced: each customer message opens that customer's window."""
        for message in value.get("messages") or []:
            if isinstance(message, dict):
                for key in customer_keys(message, value.get("contacts") or []):
                    phone.last_inbound[key] = self.clock()

    # ---- control endpoints (for people trying it with `thoth-pbx sandbox meta`)

    def template_routes(self, app: web.Application) -> None:
        """`POST /_sandbox/templates` adds one; `POST /_sandbox/templates/{id}/status` reviews one."""
        app.router.add_post("/_sandbox/templates", self._h_add_template)
        app.router.add_post("/_sandbox/templates/{template_id}/status", self._h_template_status)

    async def _h_add_template(self, request: web.Request) -> web.Response:
        """`{"name", "language", "components", "waba_id"?, "status"?, "category"?}`; the WABA
        defaults to the first phone's."""
        try:
            data = await request.json()
            waba_id = data.pop("waba_id", None) or next(iter(self.phones.values())).waba_id
            template = self.add_template(
                str(waba_id), str(data.pop("name")), str(data.pop("language")), data.pop("components"), **data
            )
        except (ValueError, KeyError, TypeError, StopIteration, AttributeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response(asdict(template), status=201)

    async def _h_template_status(self, request: web.Request) -> web.Response:
        """`{"event", "reason"?}` -> the status changes and the webhook is queued; answers it."""
        try:
            data = await request.json()
            doc = self.set_template_status(
                request.match_info["template_id"], str(data["event"]), reason=data.get("reason")
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response(doc)
