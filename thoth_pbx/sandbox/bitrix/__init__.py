"""A strict Bitrix24 simulator: REST at /rest/<method>, OAuth at /oauth/token/, events out.

Built from the documentation (../shared/reference/bitrix24-rest.md and the b24restdocs
pages it cites), not from our client, so tests that pass here exercise what a real
portal checks: OAuth access tokens that expire (401 `expired_token`) and rotate, the
leaky bucket (503 `QUERY_LIMIT_EXCEEDED`), `batch` with `$result[...]` references,
`ERROR_METHOD_NOT_FOUND`, required parameters and the documented method errors
(methods.py), register de-duplication for 30 minutes, and 302 after a domain move.
Incoming webhooks (`add_webhook()`) answer at `/rest/<user_id>/<code>/<method>[.json]`
within their own scopes. `time.operating` is each method's execution time over the last
ten one-minute baskets, per app or webhook (limits.md); `clock` and `method_cost` make it
observable without sleeping.

Switches for bad days: `outage` (every request 503 with an HTML page), `latency` (slow
answers), `storm_every` (every n-th request finds all access tokens expired),
`exhaust_operating(method)` (429 OPERATION_TIME_LIMIT until the reset time).

The Open Lines chat side (openlines.py): `imconnector.send.messages` items land in chats
(`portal.chats`, `portal.chat(connector, line, chat_id)`, `portal.chat_by_id(im_chat_id)`) with
stable im chat, session and user ids; their `files` are downloaded by the simulator in the
background (`await files_fetched()`); update/delete messages, delivery/reading statuses and
`im.message.add` act on those chats; `operator_writes()`, `operator_edits()` and
`operator_deletes()` post ONIMCONNECTORMESSAGEADD/UPDATE/DELETE as a portal does, operator files
served at /_sandbox/disk/<token>; `GET /_sandbox/portals/{member_id}/openlines` shows it all.

Everything that reached a method is in `recorder` in arrival order, so tests can assert
which calls arrived, in which order and how many times; `on_processed` runs after a
method changed state and before the answer leaves (tests use it to crash the caller in
exactly that window). Like a real portal it can POST the install (ONAPPINSTALL) and
events, form-encoded, to the service: `install()`, `send_event()`, `uninstall()`.

Run it alone with `thoth-pbx sandbox bitrix` (see docs/bitrix.md)."""

from thoth_pbx.sandbox.bitrix.server import (
    _RESULT_REF,
    BitrixSimulator,
    _error,
    _lookup,
    _outage_page,
    _read_params,
    _substitute,
    log,
)
from thoth_pbx.sandbox.bitrix.state import (
    DEFAULT_SCOPE,
    MAX_BATCH,
    PAGE,
    REGISTER_DEDUP_S,
    ChatFile,
    ChatMessage,
    DiskFile,
    Hook,
    HttpRecord,
    OpenLinesChat,
    Portal,
    Recorded,
    Recorder,
    SimError,
    SimUser,
    Webhook,
    _Basket,
    _Caller,
    _iso,
    _Paged,
    _Token,
    call_id_for,
    paged,
)

__all__ = [
    "BitrixSimulator",
    "ChatFile",
    "ChatMessage",
    "DEFAULT_SCOPE",
    "DiskFile",
    "Hook",
    "HttpRecord",
    "MAX_BATCH",
    "OpenLinesChat",
    "PAGE",
    "Portal",
    "REGISTER_DEDUP_S",
    "Recorded",
    "Recorder",
    "SimError",
    "SimUser",
    "Webhook",
    "_Basket",
    "_Caller",
    "_Paged",
    "_RESULT_REF",
    "_Token",
    "_error",
    "_iso",
    "_lookup",
    "_outage_page",
    "_read_params",
    "_substitute",
    "call_id_for",
    "log",
    "paged",
]
