"""The simulated portals' state: users, tokens, webhooks, lines, calls, the operating-time baskets, what was recorded; and Bitrix24's error and list shapes."""

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
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    connector_lines: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    open_lines: dict[int, dict[str, Any]] = field(default_factory=dict)  # imopenlines.config.* by ID
    senders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # method -> (code, description, HTTP status): the app's user lacks the right to it. Bitrix
    # answers user_access_error / ACCESS_DENIED with 403 in the docs and has been seen with 401.
    refused: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    sms_messages: dict[str, dict[str, Any]] = field(default_factory=dict)
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
