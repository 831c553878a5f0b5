"""The simulated portals' state: users, tokens, webhooks, lines, calls, Open Lines chats, the operating-time baskets, what was recorded; and Bitrix24's error and list shapes."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REGISTER_DEDUP_S = 30 * 60


PAGE = 50


MAX_BATCH = 50


DEFAULT_SCOPE = "telephony,user,imconnector,imopenlines,messageservice,crm,im"


class SimError(Exception):
    """A documented Bitrix error: `{"error": code, "error_description": ...}` with `status`."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


@dataclass
class SimUser:
    id: int
    name: str
    last_name: str = ""
    extension: str | None = None  # UF_PHONE_INNER
    active: bool = True
    user_type: str = "employee"

    def as_json(self) -> dict[str, Any]:
        return {
            "ID": str(self.id),
            "ACTIVE": self.active,
            "NAME": self.name,
            "LAST_NAME": self.last_name,
            "EMAIL": f"user{self.id}@example.com",
            "UF_PHONE_INNER": self.extension or "",
            "USER_TYPE": self.user_type,
        }


@dataclass
class Recorded:
    """One method execution as the portal saw it (also failed ones)."""

    seq: int
    at: float
    member_id: str
    method: str  # lower-case canonical name
    params: dict[str, Any]
    ok: bool
    error: str | None
    result: Any
    batch: int | None  # seq of the HTTP request when it ran inside `batch`
    caller: str = "app"  # "app" (OAuth) or "webhook:<id>"


@dataclass
class HttpRecord:
    seq: int
    at: float
    path: str
    status: int
    error: str | None


class Recorder:
    """What reached the simulator: method calls (`entries`) and HTTP requests (`requests`)."""

    def __init__(self) -> None:
        self.entries: list[Recorded] = []
        self.requests: list[HttpRecord] = []
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def calls(self, method: str | None = None, *, ok: bool | None = None) -> list[Recorded]:
        wanted = method.lower() if method else None
        return [e for e in self.entries if (wanted is None or e.method == wanted) and (ok is None or e.ok == ok)]

    def count(self, method: str | None = None, *, ok: bool | None = None) -> int:
        return len(self.calls(method, ok=ok))

    def errors(self, code: str) -> int:
        """Answers carrying `code`: whole HTTP responses plus failed commands inside batches."""
        return sum(1 for r in self.requests if r.error == code) + sum(
            1 for e in self.entries if e.error == code and e.batch is not None
        )

    def clear(self) -> None:
        self.entries.clear()
        self.requests.clear()

    def as_json(self, limit: int = 200) -> list[dict[str, Any]]:
        return [
            {"seq": e.seq, "method": e.method, "ok": e.ok, "error": e.error, "batch": e.batch, "params": e.params}
            for e in self.entries[-limit:]
        ]


@dataclass
class Webhook:
    """An incoming webhook: calls run as `user_id` within `scope` (local-webhooks.md)."""

    id: int
    user_id: int
    code: str
    scope: str

    @property
    def caller(self) -> str:
        return f"webhook:{self.id}"


@dataclass
class _Basket:
    """One minute of a method's operating time: reset `window` after its first call (limits.md)."""

    slot: int
    first: float
    used: float


@dataclass
class ChatFile:
    """A file of an incoming message as the portal fetched it: `done` once tried, `error` when it failed."""

    url: str
    name: str
    status: int | None = None  # the HTTP status the file's server answered
    sha256: str | None = None
    size: int | None = None
    mime: str | None = None
    error: str | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "name": self.name,
            "status": self.status,
            "sha256": self.sha256,
            "size": self.size,
            "mime": self.mime,
            "error": self.error,
            "done": self.done,
        }


@dataclass
class DiskFile:
    """A file an operator attached; the simulator serves it at `/_sandbox/disk/<token>`."""

    token: str
    name: str
    content: bytes
    mime: str

    @property
    def type(self) -> str:
        """image|video|audio|file, the `type` real ONIMCONNECTORMESSAGEADD payloads carry."""
        major = self.mime.split("/", 1)[0]
        return major if major in ("image", "video", "audio") else "file"

    def as_json(self) -> dict[str, Any]:
        return {"token": self.token, "name": self.name, "mime": self.mime, "size": len(self.content)}


# ChatMessage.kind: from the external channel, an operator's, im.message.add with SYSTEM=Y / N
INCOMING, OPERATOR, SYSTEM, APP = "incoming", "operator", "system", "app"


@dataclass
class ChatMessage:
    """One message in an Open Lines chat, with its im message id."""

    id: int
    kind: str  # INCOMING, OPERATOR, SYSTEM or APP
    author_id: int  # the Bitrix user: the external user's, the operator's, or the calling app's user
    text: str
    date: int  # unix seconds
    external_id: str | None = None  # incoming: the connector's message.id
    external_user: str | None = None  # incoming: the connector's user.id
    files: list[ChatFile] = field(default_factory=list)  # incoming files, fetched by the portal
    disk_files: list[DiskFile] = field(default_factory=list)  # operator files, served by the portal
    attach: Any = None  # im.message.add ATTACH as given
    markers: list[str] = field(default_factory=list)  # what the chat shows besides the text
    delivered: bool = False
    read: bool = False
    delivered_ids: list[str] = field(default_factory=list)  # external ids send.status.delivery gave
    read_ids: list[str] = field(default_factory=list)  # external ids send.status.reading gave
    edits: list[str] = field(default_factory=list)  # earlier texts, oldest first
    deleted: bool = False

    @property
    def shown(self) -> str:
        """The text as the chat shows it, with markers such as a file that could not be loaded."""
        return "\n".join([self.text, *self.markers]) if self.markers else self.text

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "author_id": self.author_id,
            "text": self.text,
            "shown": self.shown,
            "date": self.date,
            "external_id": self.external_id,
            "external_user": self.external_user,
            "files": [f.as_json() for f in self.files],
            "disk_files": [f.as_json() for f in self.disk_files],
            "attach": self.attach,
            "markers": list(self.markers),
            "delivered": self.delivered,
            "read": self.read,
            "delivered_ids": list(self.delivered_ids),
            "read_ids": list(self.read_ids),
            "edits": list(self.edits),
            "deleted": self.deleted,
        }


@dataclass
class OpenLinesChat:
    """The Open Lines chat of one (connector, line, chat.id), with its stable im chat and session ids."""

    connector: str
    line: int
    external_id: str  # the connector's chat.id
    chat_id: int  # im chat id: session.CHAT_ID, DIALOG_ID chat<N>
    session_id: int
    name: str = ""
    url: str = ""
    users: dict[str, int] = field(default_factory=dict)  # external user.id -> Bitrix user id
    messages: list[ChatMessage] = field(default_factory=list)
    # what the line bound the chat to in CRM when it started, type -> ID, the chat's own entity first
    crm: dict[str, int] = field(default_factory=dict)

    def message(self, im_id: int) -> ChatMessage | None:
        return next((m for m in self.messages if m.id == im_id), None)

    def incoming(self, external_id: str) -> ChatMessage | None:
        """The latest incoming message the connector sent with this message.id."""
        return next((m for m in reversed(self.messages) if m.kind == INCOMING and m.external_id == external_id), None)

    def of_kind(self, kind: str) -> list[ChatMessage]:
        return [m for m in self.messages if m.kind == kind]

    def as_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "line": self.line,
            "chat_external_id": self.external_id,
            "chat_id": self.chat_id,
            "dialog_id": f"chat{self.chat_id}",
            "session_id": self.session_id,
            "name": self.name,
            "url": self.url,
            "users": dict(self.users),
            "crm": dict(self.crm),
            "messages": [m.as_json() for m in self.messages],
        }


@dataclass
class Portal:
    """One Bitrix24 account with our app installed (or not yet)."""

    member_id: str
    domain: str  # host[:port] the portal answers on
    scheme: str = "http"
    rate: float = 2.0
    burst: int = 50
    scope: str = DEFAULT_SCOPE
    users: dict[int, SimUser] = field(default_factory=dict)
    installed: bool = False
    application_token: str | None = None
    old_domains: set[str] = field(default_factory=set)
    # several portals can share one simulator: all but the first live under /p/<n> (same host)
    prefix: str = ""
    # app data
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    active_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    statistics: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    cards: dict[str, set[int]] = field(default_factory=dict)  # CALL_ID -> users seeing the card
    crm: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # digits -> entities
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)  # crm.contact.add, by ID
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)  # made by register or Open Lines, by ID
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    connector_lines: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    open_lines: dict[int, dict[str, Any]] = field(default_factory=dict)  # imopenlines.config.* by ID
    senders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Open Lines chats by (connector, line, chat.id); Bitrix users of external users by (connector, user.id)
    chats: dict[tuple[str, int, str], OpenLinesChat] = field(default_factory=dict)
    im_users: dict[tuple[str, str], int] = field(default_factory=dict)
    # every send.status.delivery / .reading item as it arrived, with whether it named a known message
    status_reports: list[dict[str, Any]] = field(default_factory=list)
    # method -> (code, description, HTTP status): the app's user lacks the right to it. Bitrix
    # answers user_access_error / ACCESS_DENIED with 403 in the docs and has been seen with 401.
    refused: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # SMS the portal handed to our senders (messageservice.py), by message_id, and every accepted
    # messageservice.message.status.update in arrival order
    sms_messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    sms_status_updates: list[dict[str, Any]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    # limits
    level: float = 0.0
    stamp: float = field(default_factory=time.monotonic)
    webhooks: dict[tuple[int, str], Webhook] = field(default_factory=dict)  # (user id, code) -> hook
    # (caller, method) -> minute baskets of execution time; caller is "app" or Webhook.caller
    operating: dict[tuple[str, str], list[_Basket]] = field(default_factory=dict)
    operating_blocked: dict[tuple[str, str], float] = field(default_factory=dict)  # -> epoch unblock

    @property
    def client_endpoint(self) -> str:
        return f"{self.scheme}://{self.domain}{self.prefix}/rest/"

    def next_id(self, kind: str) -> int:
        self.ids[kind] = self.ids.get(kind, 0) + 1
        return self.ids[kind]

    def user(self, user_id: Any) -> SimUser | None:
        try:
            user = self.users.get(int(user_id))
        except (TypeError, ValueError):
            return None
        return user if user and user.active else None

    def chat(self, connector: str, line: int, external_id: str) -> OpenLinesChat | None:
        return self.chats.get((connector, line, external_id))

    def chat_by_id(self, chat_id: int) -> OpenLinesChat | None:
        """The Open Lines chat with this im chat id (`session.CHAT_ID`)."""
        return next((c for c in self.chats.values() if c.chat_id == chat_id), None)

    def user_by_extension(self, extension: Any) -> SimUser | None:
        for user in self.users.values():
            if user.active and user.extension and user.extension == str(extension):
                return user
        return None


@dataclass
class _Token:
    member_id: str
    expires_at: float


@dataclass(frozen=True)
class _Caller:
    """Who is calling: the installed app (OAuth token) or one incoming webhook."""

    key: str
    scope: str
    webhook: Webhook | None = None


Hook = Callable[[Portal, Recorded], Any]


@dataclass
class _Paged:
    items: list[Any]
    total: int | None
    next: int | None


def paged(items: list[Any], start: Any) -> _Paged:
    """List methods: 50 per page, `start` offset, `next` when more remain (user.get docs).

    `start=-1` skips the count (performance/huge-data.md): the first page, `total` 0 as that
    page's example answer shows, and no `next`; the caller pages by filtering on the last ID.
    """
    try:
        offset = int(start or 0)
    except (TypeError, ValueError):
        offset = 0
    if offset == -1:
        return _Paged(items[:PAGE], 0, None)
    offset = max(0, offset)
    page = items[offset : offset + PAGE]
    more = offset + PAGE < len(items)
    return _Paged(page, len(items), offset + PAGE if more else None)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def call_id_for(portal: Portal, now: float | None = None) -> str:
    """CALL_IDs look like `externalCall.<32 hex>.<unix time>` (register docs)."""
    digest = hashlib.md5(f"{portal.member_id}{secrets.token_hex(8)}".encode()).hexdigest()
    return f"externalCall.{digest}.{int(time.time() if now is None else now)}"
