"""A strict simulator of the Graph API endpoints thoth-pbx uses, built from Meta's docs.

Run it with `thoth-pbx sandbox meta` and point the service at it
(`THOTH_META_GRAPH_URL=http://127.0.0.1:8900`). It is strict on purpose: a lenient fake
proves nothing. What it enforces (sources: docs/meta.md and the Meta fact sheet):

- auth: `Authorization: Bearer T` or `access_token=T`; none -> code 104 (HTTP 400),
  unknown -> 190 (401), expired -> 190 subcode 463, missing permission -> 10 (403),
  a phone outside the token's WABAs -> 100 subcode 33;
- `POST /{phone_number_id}/settings`: only documented fields (others -> 100 naming the
  param), enum values, one SIP server per number, hostname required, port 5061 by default,
  request_uri_user_params <= 128 chars, SIP ENABLED needs a server (100),
  calling ENABLED needs a messaging limit >= 2000 (138015) and SIP or an app subscribed to
  the `calls` field (138018); `servers: []` deletes this app's server and its password;
  DISABLED keeps servers; an omitted `holiday_schedule` deletes the existing one;
- `GET .../settings[?include_sip_credentials=true]`: the stored settings, servers with
  `app_id`, the password (one per number + app) only with credentials and only for the
  caller's app; `srtp_key_exchange_protocol` only when it was set explicitly;
- `POST /{phone_number_id}/messages`: every message type checked field by field (text, image,
  video, audio, document, sticker by `id` of media uploaded on the number or by http(s) `link`,
  location, contacts, interactive, reaction, template; `context` replies); `status: read`
  receipts with an optional typing indicator, only for message ids a webhook announced. After
  each accepted send, status webhooks (`sent`, `delivered`, `read`, or `failed` with errors) go
  signed to the sending app's `callback_url` from a per-phone FIFO background task
  (`drain_webhooks()` waits for them, `webhook_log` records them);
- media: `POST /{phone_number_id}/media` (multipart; supported MIME types and sizes, else 131053),
  `GET /{media_id}` (a `/_media/...` URL on the simulator, Bearer token required, expires 5 minutes
  later by `sim.clock`), `DELETE /{media_id}`; `add_media()` stores media directly;
- `POST /{phone_number_id}/calls`
  (131055 on a SIP number, 138000 when calling is off; accept/reject/terminate only for call ids
  a `connect` webhook announced or `connect` placed, else 100 naming call_id),
  `GET /{phone_number_id}` and `GET /{waba_id}/phone_numbers` (`fields=`, unknown field 100),
  `GET /{phone_number_id}/call_permissions?user_wa_id=`, `GET /debug_token`;
- control endpoints under `/_sandbox/` (not Graph): seed apps, tokens and phones (PATCH sets
  `call_permissions` per user), read the state and the request log, make the next call(s) fail
  with any Graph error, and send signed webhooks (see `WebhookSender`); what those webhooks
  announce (message and call ids) is remembered by `announce()`;
- templates (templates.py): per WABA, `GET /{waba_id}/message_templates` and `GET /{template_id}`,
  `POST /{waba_id}/message_templates` creates one (approved at once; a bad definition is 100
  naming the mistake, an existing name + language 2388024); a `call_permission_request`
  component needs a MARKETING or UTILITY category, a non-empty body and no buttons;
  a template send must name an APPROVED translation (132001, paused 132015, disabled 132016) with
  the right parameter counts (132000) and formats (132012); the recorded send keeps `rendered`,
  what the customer sees; `set_template_status()` posts `message_template_status_update`;
- call permission requests (permissions.py): the interactive `call_permission_request` and a
  template with that component count against 1 a day / 2 a week per user (138009);
  `permission_reply()` answers only a user who was asked;
- the 24-hour customer service window: a customer's message announced by `announce()` (or
  `customer_wrote()`) opens it by `sim.clock`; a free-form send outside it fails with 131047
  (a `failed` status webhook, or the Graph answer with `window_error="response"`); per phone
  `enforce_window=False` turns it off."""

from thoth_pbx.sandbox.meta.media import (
    MEDIA_URL_TTL,
    SUPPORTED_MEDIA,
    SimMedia,
    check_media,
    media_view,
)
from thoth_pbx.sandbox.meta.methods import (
    _BSUID,
    _CALLING_KEYS,
    _DATE,
    _DAYS,
    _ENUMS,
    _HHMM,
    _PHONE_DEFAULT_FIELDS,
    _PHONE_FIELDS,
    _PHONE_LIST_FIELDS,
    MEDIA_TYPES,
    MESSAGE_TYPES,
    _enum,
    _expect_keys,
    _validate_call_hours,
    call_action,
    call_permissions_view,
    mark_read,
    phone_view,
    planned_statuses,
    send_message,
    settings_view,
    update_settings,
    validate_settings,
)
from thoth_pbx.sandbox.meta.server import MetaSimulator, _body, _control_json, _ControlError, _maybe_json, seeded, serve
from thoth_pbx.sandbox.meta.state import (
    AUTO_STATUSES,
    GRAPH_VERSION_RE,
    KNOWN_ERRORS,
    MANAGEMENT,
    MESSAGING,
    FailRule,
    GraphFail,
    Seed,
    SimApp,
    SimPhone,
    SimToken,
    invalid,
)
from thoth_pbx.sandbox.meta.templates import (
    TEMPLATE_FIELD,
    WINDOW_S,
    SimTemplate,
    TemplateControl,
    check_template_send,
    find_template,
    list_templates,
    seed_templates,
    status_update_change,
)
from thoth_pbx.sandbox.meta.webhooks import (
    STATUS_ERRORS,
    StatusDelivery,
    StatusPoster,
    WebhookSender,
    _metadata,
    call_connect_change,
    call_terminate_change,
    delivery,
    media_message_change,
    message_change,
    messages_change,
    sign,
    status_change,
    status_error,
)

__all__ = [
    "AUTO_STATUSES",
    "FailRule",
    "GRAPH_VERSION_RE",
    "GraphFail",
    "KNOWN_ERRORS",
    "MANAGEMENT",
    "MEDIA_TYPES",
    "MEDIA_URL_TTL",
    "MESSAGE_TYPES",
    "MESSAGING",
    "MetaSimulator",
    "STATUS_ERRORS",
    "SUPPORTED_MEDIA",
    "Seed",
    "SimApp",
    "SimMedia",
    "SimPhone",
    "SimTemplate",
    "SimToken",
    "StatusDelivery",
    "StatusPoster",
    "TEMPLATE_FIELD",
    "TemplateControl",
    "WINDOW_S",
    "WebhookSender",
    "_BSUID",
    "_CALLING_KEYS",
    "_ControlError",
    "_DATE",
    "_DAYS",
    "_ENUMS",
    "_HHMM",
    "_PHONE_DEFAULT_FIELDS",
    "_PHONE_FIELDS",
    "_PHONE_LIST_FIELDS",
    "_body",
    "_control_json",
    "_enum",
    "_expect_keys",
    "_maybe_json",
    "_metadata",
    "_validate_call_hours",
    "call_action",
    "call_connect_change",
    "call_permissions_view",
    "call_terminate_change",
    "check_media",
    "check_template_send",
    "delivery",
    "find_template",
    "invalid",
    "list_templates",
    "mark_read",
    "media_message_change",
    "media_view",
    "message_change",
    "messages_change",
    "phone_view",
    "planned_statuses",
    "seed_templates",
    "seeded",
    "send_message",
    "serve",
    "settings_view",
    "sign",
    "status_change",
    "status_error",
    "status_update_change",
    "update_settings",
    "validate_settings",
]
