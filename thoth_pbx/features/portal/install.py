"""Install, uninstall and incoming events of our Bitrix24 app (form-encoded, verified, fast).

Install (ONAPPINSTALL, posted to the app's "Initial installation path" or as an event):
the posted tokens are not taken on faith. The refresh token is exchanged at the OAuth
server with our client_secret; only an install of *our* app on a real portal survives
that, and the answer names the portal (member_id, REST endpoint). The app instance is
then created or updated by member_id with the fresh token pair (encrypted) and the
application_token, and the set-up jobs are queued in the same transaction: event.bind
for `bound_events`, an external line per WhatsApp number of the portal, the user map.
Reinstalling repeats all of it (Bitrix drops event bindings on reinstall) and wakes the
portal's waiting jobs.

Every other event must carry the application_token saved at install. It is compared in
constant time; a mismatch is refused with 401 before anything is stored. ONAPPUNINSTALL
marks the instance uninstalled at once; other events become `bitrix.event` outbox jobs
and the request is answered immediately (Bitrix does not retry events and deprioritises
slow handlers). `on_event(name, handler)` lets other parts (call flow, open lines) react.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix import telephony
from thoth_pbx.clients.bitrix.errors import BitrixAuthError, BitrixLogicError, BitrixUnavailable
from thoth_pbx.clients.bitrix.rest import refresh_tokens
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.secrets import constant_time_equal
from thoth_pbx.core.shapes import sub
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import AppInstance, Phone
from thoth_pbx.features.portal.portals import Portals, apply_grant
from thoth_pbx.features.portal.users import fetch_users, store_users
from thoth_pbx.outbox.jobs import Job
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.snapshots import ChangeCounter, Snapshots
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/bitrix/events"
INSTALL_PATH = "/api/bitrix/install"
KIND_SETUP = "bitrix.portal.setup"
KIND_USERS = "bitrix.portal.users"
KIND_EVENT = "bitrix.event"
# Always bound; telephony events get their handlers from the call flow (on_event).
DEFAULT_EVENTS = ("ONAPPUNINSTALL", "ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART")


@dataclass(frozen=True)
class BitrixEvent:
    instance_id: int
    event: str
    data: Any
    ts: str | None


EventHandler = Callable[[BitrixEvent], Awaitable[dict[str, Any] | None]]
# handled inside the transaction that receives the event: database work only (no remote
# calls), so the event and what it leads to (its jobs) are stored together, with no job hop
InlineHandler = Callable[[AsyncSession, BitrixEvent], Awaitable[dict[str, Any] | None]]


class SetupHook(Protocol):
    async def __call__(self, session: AsyncSession, instance_id: int, *, reason: str) -> list[int]: ...


def portal_chain(instance_id: int) -> str:
    return f"bitrix-portal:{instance_id}"


@dataclass(frozen=True)
class PortalKey:
    """What proves a portal's requests: its row's id, status and install-time application_token."""

    id: int
    status: str
    application_token: str | None


def _check_token(form: dict[str, Any], expected: str | None, *, what: str) -> None:
    """401 unless `auth[application_token]` is the one saved at install (None: unknown portal)."""
    auth = sub(form, "auth")
    token = str(auth.get("application_token") or "")
    # compare even when we have nothing, so timing does not tell which member_ids exist
    matches = constant_time_equal(token, expected or "\0" * 32) and bool(expected) and bool(token)
    if not matches:
        log.warning(
            "bitrix request refused: application_token does not match",
            extra={"what": what, "member_id": str(auth.get("member_id") or "")},
        )
        raise FieldError("auth[application_token]", "does not match the token saved at install", 401)


def _member_id(form: dict[str, Any]) -> str:
    return str(sub(form, "auth").get("member_id") or "")


async def verified_instance(session: AsyncSession, form: dict[str, Any], *, what: str) -> AppInstance:
    """The portal that posted `form` (an event, an SMS to our sender), proven by the
    `auth[application_token]` saved at install for its `auth[member_id]`; 401 otherwise."""
    member_id = _member_id(form)
    row = await session.scalar(select(AppInstance).where(AppInstance.member_id == member_id)) if member_id else None
    _check_token(form, row.application_token if row is not None else None, what=what)
    assert row is not None  # a token matched
    return row


class BitrixApp:
    """Install/uninstall/events of the app and the portal set-up jobs."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        portals: Portals,
        *,
        public_url: str,
        changes: ChangeCounter | None = None,
    ) -> None:
        self._sessions = sessions
        # every event of a portal is proven by the same row: read once, until app_instance changes
        self._keys: Snapshots[str, PortalKey | None] = Snapshots(changes)
        self._outbox = outbox
        self._portals = portals
        self.handler_url = public_url.rstrip("/") + EVENTS_PATH
        self._handlers: dict[str, EventHandler] = {}
        # other features' set-up, queued with the portal's (install, admin sync), after it on its chain
        self.setup_hooks: list[SetupHook] = []
        self._chains: dict[str, Callable[[BitrixEvent], str | None]] = {}
        self._inline: dict[str, InlineHandler] = {}

    # ------------------------------------------------------------------ event registry

    def on_event(
        self, event: str, handler: EventHandler, *, chain: Callable[[BitrixEvent], str | None] | None = None
    ) -> None:
        """React to `event` (bound on the next install/sync); `chain` orders related events."""
        name = self._new_event(event)
        self._handlers[name] = handler
        if chain is not None:
            self._chains[name] = chain

    def on_event_inline(self, event: str, handler: InlineHandler) -> None:
        """React to `event` in the transaction that receives it (bound like any event)."""
        self._inline[self._new_event(event)] = handler

    def _new_event(self, event: str) -> str:
        """One handler per event, queued or inline."""
        name = event.upper()
        if name in self._handlers or name in self._inline:
            raise ValueError(f"a handler for {name} is already registered")
        return name

    @property
    def bound_events(self) -> list[str]:
        return sorted(set(DEFAULT_EVENTS) | set(self._handlers) | set(self._inline))

    # ------------------------------------------------------------------ install

    async def install(self, form: dict[str, Any]) -> dict[str, Any]:
        auth = form.get("auth")
        if not isinstance(auth, dict):
            raise FieldError("auth", "is required: Bitrix24 posts auth[member_id], auth[refresh_token], ...")
        for key in ("member_id", "refresh_token", "application_token"):
            if not isinstance(auth.get(key), str) or not auth[key].strip():
                raise FieldError(f"auth[{key}]", "is required")
        for key in ("access_token", "refresh_token", "application_token"):
            register_secret(auth.get(key))
        member_id = auth["member_id"].strip()
        if self._portals.oauth is None:
            raise FieldError(
                "bitrix_client_id",
                "THOTH_BITRIX_CLIENT_ID and THOTH_BITRIX_CLIENT_SECRET must be set before installing",
                503,
            )
        try:
            grant = await refresh_tokens(self._portals.http, self._portals.oauth, auth["refresh_token"].strip())
        except BitrixUnavailable as exc:
            log.error("bitrix install: OAuth server unreachable", extra={"member_id": member_id, "error": str(exc)})
            raise FieldError(
                "oauth", "the Bitrix24 OAuth server is unreachable; install the app again later", 503
            ) from None
        except BitrixAuthError as exc:
            log.warning("bitrix install refused by the OAuth server", extra={"member_id": member_id, "error": exc.code})
            raise FieldError(
                "auth[refresh_token]", f"the OAuth server refused it ({exc.code}): not an install of this app", 401
            ) from None
        if grant.member_id != member_id:
            raise FieldError("auth[member_id]", "does not match the portal the OAuth server vouches for", 401)
        endpoint = grant.client_endpoint or auth.get("client_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise FieldError("auth[client_endpoint]", "no REST endpoint for this portal", 400)
        endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        async with self._sessions() as session, session.begin():
            row = await session.scalar(select(AppInstance).where(AppInstance.member_id == member_id))
            created = row is None
            if row is None:
                row = AppInstance(member_id=member_id, domain="", settings={})
                session.add(row)
            row.domain = urlsplit(endpoint).hostname or str(auth.get("domain") or "")
            apply_grant(row, grant)
            row.client_endpoint = endpoint
            row.application_token = auth["application_token"].strip()
            row.status, row.status_detail = "active", None
            await session.flush()
            instance_id = row.id
            setup = await self.enqueue_setup(session, instance_id, reason="install")
            # jobs that waited for this portal (needs_reauth, outage) may go now
            await session.execute(
                update(OutboxJob)
                .where(OutboxJob.app_instance_id == instance_id, OutboxJob.status == "pending")
                .values(next_attempt_at=utcnow())
            )
        self._portals.forget(instance_id)
        log.info(
            "bitrix app installed", extra={"member_id": member_id, "instance": instance_id, "new_instance": created}
        )
        return {"installed": True, "instance_id": instance_id, "member_id": member_id, "setup_jobs": setup}

    async def enqueue_setup(self, session: AsyncSession, instance_id: int, *, reason: str) -> list[int]:
        # set-ups of one portal run in order; the user map is independent of them
        jobs = [
            await self._outbox.enqueue(session, KIND_SETUP, instance_id, portal_chain(instance_id), {"reason": reason}),
            await self._outbox.enqueue(session, KIND_USERS, instance_id, None, {"reason": reason}),
        ]
        for hook in self.setup_hooks:
            jobs.extend(await hook(session, instance_id, reason=reason))
        return jobs

    # ------------------------------------------------------------------ events

    async def receive(self, form: dict[str, Any]) -> dict[str, Any]:
        """A form-encoded event from the portal: verify, then act or queue. Returns the answer body."""
        event = str(form.get("event") or "").strip().upper()
        if not event:
            raise FieldError("event", "is required")
        if event == "ONAPPINSTALL":
            return await self.install(form)
        if event == "ONAPPUNINSTALL":
            return await self._uninstall(form)
        key = await self._key(form, what=event)
        if key.status == "uninstalled":
            raise FieldError("member_id", "the app is uninstalled on this portal", 410)
        received = BitrixEvent(key.id, event, form.get("data"), form.get("ts"))
        async with self._sessions() as session, session.begin():
            if event in self._inline:
                return {"handled": await self._inline[event](session, received)}
            payload = {
                "event": event,
                "data": form.get("data"),
                "ts": form.get("ts"),
                "event_handler_id": form.get("event_handler_id"),
            }
            chain_of = self._chains.get(event)
            chain = chain_of(received) if chain_of else None
            job_id = await self._outbox.enqueue_in_order(session, KIND_EVENT, key.id, chain, payload)
        return {"queued": job_id}

    async def _key(self, form: dict[str, Any], *, what: str) -> PortalKey:
        """The posting portal, proven by its application_token (401 otherwise); kept in memory."""
        member_id = _member_id(form)

        async def load() -> PortalKey | None:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(AppInstance.id, AppInstance.status, AppInstance.application_token).where(
                            AppInstance.member_id == member_id
                        )
                    )
                ).one_or_none()
            return PortalKey(row.id, row.status, row.application_token) if row is not None else None

        key = await self._keys.get(member_id, load) if member_id else None
        _check_token(form, key.application_token if key is not None else None, what=what)
        assert key is not None  # a token matched
        return key

    async def _uninstall(self, form: dict[str, Any]) -> dict[str, Any]:
        async with self._sessions() as session, session.begin():
            row = await verified_instance(session, form, what="ONAPPUNINSTALL")
            row.status = "uninstalled"
            row.status_detail = f"uninstalled from the portal at {utcnow().isoformat(timespec='seconds')}"
            row.access_token = None
            row.refresh_token = None
            member_id, instance_id = row.member_id, row.id
        self._portals.forget(instance_id)
        log.info("bitrix app uninstalled", extra={"member_id": member_id, "instance": instance_id})
        return {"uninstalled": True}

    async def run_event(self, job: Job) -> dict[str, Any] | None:
        """The `bitrix.event` job: hand the event to its registered handler."""
        event = str(job.payload.get("event") or "")
        handler = self._handlers.get(event)
        if handler is None:
            return {"ignored": True, "reason": f"no handler for {event}"}
        return await handler(BitrixEvent(job.instance_id or 0, event, job.payload.get("data"), job.payload.get("ts")))

    # ------------------------------------------------------------------ set-up jobs

    async def setup(self, job: Job) -> dict[str, Any]:
        """Bind our events to our handler URL and add an external line per WhatsApp number."""
        assert job.instance_id is not None
        client = await self._portals.client(job.instance_id)
        bindings = await client.call("event.get") or []
        wanted = self.bound_events
        have = {(str(b.get("event", "")).upper(), b.get("handler")) for b in bindings if isinstance(b, dict)}
        stale = [(e, h) for e, h in have if e in wanted and h != self.handler_url]
        missing = [e for e in wanted if (e, self.handler_url) not in have]
        await asyncio.gather(*(client.call("event.unbind", {"event": e, "handler": h}) for e, h in stale))
        await asyncio.gather(*(self._bind(client, e) for e in missing))
        async with self._sessions() as session:
            numbers = (
                await session.scalars(
                    select(Phone.number).where(Phone.app_instance_id == job.instance_id).order_by(Phone.id)
                )
            ).all()
        existing = {line.number for line in await telephony.get_lines(client)}
        wanted_lines = {telephony.line_number_for(n): n for n in numbers}
        added = [number for number in wanted_lines if number not in existing]
        await asyncio.gather(*(self._add_line(client, number, wanted_lines[number]) for number in added))
        return {
            "events_bound": missing,
            "events_unbound": [e for e, _ in stale],
            "lines_added": added,
            "lines": sorted(wanted_lines),
        }

    async def _bind(self, client: Any, event: str) -> None:
        try:
            await client.call("event.bind", {"event": event, "handler": self.handler_url})
        except BitrixLogicError as exc:
            if "already" not in exc.description.lower():
                raise

    async def _add_line(self, client: Any, number: str, e164: str) -> None:
        try:
            await telephony.add_line(client, number, f"WhatsApp {e164}")
        except BitrixLogicError as exc:
            if exc.description != "Line already exists":  # idempotent: someone added it already
                raise

    async def sync_users(self, job: Job) -> dict[str, Any]:
        """Refresh the user <-> extension map from user.get."""
        assert job.instance_id is not None
        client = await self._portals.client(job.instance_id)
        users = await fetch_users(client)
        async with self._sessions() as session, session.begin():
            count = await store_users(session, job.instance_id, users)
        return {"users": count, "with_extension": sum(1 for u in users if u.extension)}
