"""Meta's webhook: which account (api-key), handshake, signature, parse, store before 200.

The HTTP edge (web/meta_webhook.py) only moves bytes in and status codes out; the decisions are
here. Order of checks for a delivery: api-key (403) -> size (413) -> X-Hub-Signature-256
over the raw bytes with the account's app secret (401, nothing stored) -> JSON and
envelope (400) -> every change written to `webhook_inbox` and committed -> 200.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from thoth_pbx.clients.meta.inbox import InboxWriter
from thoth_pbx.clients.meta.payloads import InboxEvent, PayloadError, events_of, unknown_keys
from thoth_pbx.core.secrets import constant_time_equal
from thoth_pbx.core.validation import FieldError, json_body
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # Meta sends up to 3 MB
SIGNATURE_HEADER = "X-Hub-Signature-256"


def signature_of(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.digest(app_secret.encode(), body, hashlib.sha256).hex()


def signature_ok(body: bytes, header: str | None, app_secret: str) -> bool:
    """HMAC-SHA256 of the raw body, compared in constant time (pure)."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature_of(body, app_secret).encode(), header.strip().encode())


def handshake_reply(params: Mapping[str, str], verify_token: str) -> str:
    """The `hub.challenge` to echo, or FieldError(403) for anything but a correct subscribe."""
    if params.get("hub.mode") != "subscribe":
        raise FieldError("hub.mode", "must be subscribe", 403)
    given = params.get("hub.verify_token")
    if not given or not constant_time_equal(given, verify_token):
        raise FieldError("hub.verify_token", "does not match this account's verify token", 403)
    challenge = params.get("hub.challenge")
    if not challenge:
        raise FieldError("hub.challenge", "is required", 403)
    return challenge


@dataclass(frozen=True)
class AccountKeys:
    """What the webhook needs of an account, cached so a delivery costs no extra query."""

    id: int
    waba_id: str | None
    app_secret: str | None
    verify_token: str
    phone_number_ids: frozenset[str]


class AccountLookup(Protocol):
    """api-key -> the account's keys, or None (features/directory/accounts.py answers)."""

    async def by_api_key(self, api_key: str | None) -> AccountKeys | None: ...


@dataclass
class Receipt:
    account_id: int
    events: int


@dataclass
class _Once:
    """Log a notice once per process per subject (unknown kinds/keys, unrouted numbers)."""

    seen: set[str] = field(default_factory=set)

    def __call__(self, subject: str, message: str, **extra: Any) -> None:
        if subject in self.seen or len(self.seen) > 10_000:
            return
        self.seen.add(subject)
        log.warning(message, extra=extra)


class WebhookReceiver:
    def __init__(self, accounts: AccountLookup, writer: InboxWriter, *, max_body: int = MAX_BODY) -> None:
        self.accounts = accounts
        self.writer = writer
        self.max_body = max_body
        self._once = _Once()

    async def account(self, api_key: str | None) -> AccountKeys:
        keys = await self.accounts.by_api_key(api_key)
        if keys is None:
            raise FieldError(
                "api-key", "unknown or missing api-key" if api_key else "the api-key query parameter is required", 403
            )
        return keys

    async def handshake(self, api_key: str | None, params: Mapping[str, str]) -> str:
        account = await self.account(api_key)
        challenge = handshake_reply(params, account.verify_token)
        log.info("webhook verified", extra={"waba_account_id": account.id})
        return challenge

    def check_size(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            raise FieldError("body", f"is larger than {self.max_body} bytes", 413)

    async def receive(self, account: AccountKeys, body: bytes, signature: str | None) -> Receipt:
        self.check_size(len(body))
        if not account.app_secret:
            self._once(
                f"nosecret:{account.id}",
                "webhook rejected: the account has no app secret to check signatures",
                waba_account_id=account.id,
            )
            raise FieldError(SIGNATURE_HEADER, "cannot be checked: set the app secret of this WABA account", 401)
        if not signature_ok(body, signature, account.app_secret):
            log.warning("webhook signature rejected", extra={"waba_account_id": account.id, "present": bool(signature)})
            raise FieldError(
                SIGNATURE_HEADER, "missing or does not match the body" if signature else "is required", 401
            )
        doc = json_body(body)
        try:
            events = events_of(doc)
        except PayloadError as exc:
            raise FieldError(exc.path, exc.message) from None
        self._notice(account, doc, events)
        now = utcnow()
        await self.writer.store([_row(account.id, e, now) for e in events])
        return Receipt(account.id, len(events))

    def _notice(self, account: AccountKeys, doc: dict[str, Any], events: list[InboxEvent]) -> None:
        """Unknown things and unrouted numbers are stored anyway; say so once."""
        if doc.get("object") != "whatsapp_business_account":
            self._once(
                f"object:{doc.get('object')}",
                "webhook object not whatsapp_business_account; stored as is",
                object=str(doc.get("object"))[:64],
            )
        for event in events:
            keys = unknown_keys(event)
            if keys or not event.known:
                self._once(
                    f"kind:{event.kind}:{keys}",
                    "webhook has an unknown field, event or key; stored unchanged",
                    kind=event.kind,
                    keys=keys[:20],
                )
            if account.waba_id and event.waba_id and event.waba_id != account.waba_id:
                self._once(
                    f"waba:{account.id}:{event.waba_id}",
                    "webhook entry id differs from the account's WABA id",
                    waba_account_id=account.id,
                    entry_id=event.waba_id,
                )
            pnid = event.phone_number_id
            if pnid and pnid not in account.phone_number_ids:
                self._once(
                    f"pnid:{account.id}:{pnid}",
                    "webhook for a phone number id not configured on this account",
                    waba_account_id=account.id,
                    phone_number_id=pnid,
                )


def _row(account_id: int, event: InboxEvent, now: Any) -> dict[str, Any]:
    pnid = event.phone_number_id if event.phone_number_id and len(event.phone_number_id) <= 32 else None
    return {
        "dedup_key": event.dedup_key,
        "waba_account_id": account_id,
        "phone_number_id": pnid,
        "field": event.field[:64],
        "kind": event.kind[:64],
        "payload": event.payload,
        "received_at": now,
        "entry_time": None if event.entry_time is None else dt.datetime.fromtimestamp(event.entry_time, dt.UTC),
    }
