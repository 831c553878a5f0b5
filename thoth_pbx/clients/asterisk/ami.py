"""Asterisk Manager Interface client: panoramisk's wire protocol, our own connection life.

panoramisk parses AMI frames and correlates replies (ActionID, EventLists) well, but its
Manager sends Login without reporting failure, never checks Ping replies and leaves
futures hanging after a disconnect (see docs/decisions.md). So we use only its
`AMIProtocol`/`Action`/`Message` and run the connection ourselves:

* every action has a timeout and fails fast with `AmiNotConnected` while we are down;
* a rejected Login is an `AmiLoginFailed` error visible in `status`;
* a Ping every `ping_interval` must be answered within `ping_timeout`, else we reconnect;
* reconnects back off exponentially (0.5 s doubling to 10 s, with jitter).

This is the only module that imports panoramisk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import fnmatch
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from panoramisk.actions import Action, Command
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from thoth_pbx.clients.asterisk.reconnect import Backoff, Supervisor, pause
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.settings import AmiTarget

log = logging.getLogger(__name__)

EventHandler = Callable[[Message], Awaitable[None] | None]


class AmiError(Exception):
    pass


class AmiNotConnected(AmiError):
    pass


class AmiLoginFailed(AmiError):
    pass


class AmiTimeout(AmiError):
    pass


class AmiActionFailed(AmiError):
    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"AMI {action} failed: {message}")


@dataclass
class AmiStatus:
    state: str  # disabled | connecting | connected | down | login_failed
    since: dt.datetime
    error: str | None = None
    version: str | None = None
    fully_booted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since.isoformat(),
            "error": self.error,
            "version": self.version,
            "fully_booted": self.fully_booted,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Link:
    """The `factory` object AMIProtocol talks back to, for one TCP connection."""

    forgetable_actions: tuple[str, ...] = ()
    save_stream = None

    def __init__(self, client: AmiClient) -> None:
        self.client = client
        self.awaiting_actions: deque[Action] = deque()
        self.lost = asyncio.Event()

    def dispatch(self, message: Message) -> None:
        self.client._dispatch(message)

    def connection_lost(self, exc: Any) -> None:
        self.lost.set()


class _Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk ships no types
    def connection_lost(self, exc: Exception | None) -> None:
        if self.factory is not None:
            super().connection_lost(exc)


class AmiClient:
    def __init__(
        self,
        target: AmiTarget | None,
        *,
        action_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        self.target = target
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._changed = asyncio.Event()
        self.status = AmiStatus("disabled" if target is None else "connecting", _now())
        self._protocol: _Protocol | None = None
        self._link: _Link | None = None
        self._supervisor = Supervisor("ami-supervisor", self._supervise)
        self._connected = asyncio.Event()
        self._handlers: list[tuple[str, re.Pattern[str], EventHandler]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.connections = 0  # how many times we logged in (tests watch reconnects)
        if target is not None:
            register_secret(target.secret)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.target is None:
            return
        self._supervisor.start()

    async def stop(self) -> None:
        await self._supervisor.stop()
        self._drop_connection("stopped")
        for task in list(self._background):
            task.cancel()
        self.status = AmiStatus("disabled" if self.target is None else "down", _now(), "stopped")

    async def wait_connected(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise AmiNotConnected(f"AMI not connected after {timeout}s: {self.status.error}") from None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def status(self) -> AmiStatus:
        return self._status

    @status.setter
    def status(self, value: AmiStatus) -> None:
        self._status = value
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_ready(self, timeout: float) -> AmiStatus:
        """Wait until logged in and Asterisk said FullyBooted (all modules loaded, e.g. after a restart)."""
        try:
            async with asyncio.timeout(timeout):
                while not (self.connected and self._status.fully_booted):
                    await self._changed.wait()
        except TimeoutError:
            raise AmiNotConnected(f"Asterisk not ready after {timeout}s ({self._status.state})") from None
        return self._status

    async def wait_state(self, *states: str, timeout: float) -> AmiStatus:
        """Wait until the connection state is one of `states` (e.g. "login_failed", "down")."""
        try:
            async with asyncio.timeout(timeout):
                while self._status.state not in states:
                    await self._changed.wait()
        except TimeoutError:
            raise AmiTimeout(f"AMI state is {self._status.state!r}, not {'/'.join(states)}, after {timeout}s") from None
        return self._status

    async def _supervise(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not self._supervisor.stopping.is_set():
            try:
                await self._connect_once()
                backoff.reset()
                await self._keepalive()
            except asyncio.CancelledError:
                raise
            except AmiLoginFailed as exc:
                self._set_state("login_failed", str(exc))
                log.error("AMI login rejected", extra={"ami": str(self.target), "error": str(exc)})
            except (TimeoutError, OSError, AmiError) as exc:
                reason = str(exc) or type(exc).__name__
                if self.status.state != "down" or self.status.error != reason:
                    log.warning("AMI unavailable", extra={"ami": str(self.target), "error": reason})
                self._set_state("down", reason)
            finally:
                self._drop_connection(self.status.error or "connection closed")
            await pause(self._supervisor.stopping, backoff.next_delay())

    async def _connect_once(self) -> None:
        assert self.target is not None
        loop = asyncio.get_running_loop()
        self._set_state("connecting", self.status.error)
        link = _Link(self)
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(_Protocol, self.target.host, self.target.port)
        protocol.factory = link
        protocol.encoding = "utf8"
        protocol.log = log
        self._protocol, self._link = protocol, link
        self.status.fully_booted = False
        reply = await self._send(
            {"Action": "Login", "Username": self.target.user, "Secret": self.target.secret, "Events": "system"},
            timeout=self.connect_timeout,
        )
        if not reply.success:
            raise AmiLoginFailed(f"login as {self.target.user!r} rejected: {reply.get('Message', 'no reason')}")
        self.connections += 1
        self.status = AmiStatus("connected", _now(), None, protocol.version, self.status.fully_booted)
        self._connected.set()
        log.info("AMI connected", extra={"ami": str(self.target), "ami_version": protocol.version})

    async def _keepalive(self) -> None:
        link = self._link
        assert link is not None
        while True:
            try:
                async with asyncio.timeout(self.ping_interval):
                    await link.lost.wait()
                raise AmiNotConnected("connection closed by Asterisk")
            except TimeoutError:
                pass
            try:
                reply = await self._send({"Action": "Ping"}, timeout=self.ping_timeout)
            except AmiTimeout:
                raise AmiNotConnected(f"no Ping reply within {self.ping_timeout}s") from None
            if not reply.success:
                raise AmiNotConnected(f"Ping answered with an error: {reply.get('Message')}")

    def _drop_connection(self, reason: str) -> None:
        self._connected.clear()
        protocol, link = self._protocol, self._link
        self._protocol = self._link = None
        if protocol is None or link is None:
            return
        pending = [a for a in protocol.responses.values()]
        protocol.factory = None
        try:
            protocol.transport.close()
        except Exception:  # pragma: no cover - transport already gone
            pass
        for action in pending + list(link.awaiting_actions):
            if not action.future.done():
                action.future.set_exception(AmiNotConnected(f"connection lost before the reply: {reason}"))
                action.future.exception()  # a caller that already gave up must not log "never retrieved"

    def _set_state(self, state: str, error: str | None) -> None:
        if self.status.state != state or self.status.error != error:
            self.status = AmiStatus(state, _now(), error, self.status.version, False)

    # ------------------------------------------------------------------ actions

    async def _send(self, fields: Mapping[str, Any], *, timeout: float, as_list: bool | None = None) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            raise AmiNotConnected(f"AMI is {self.status.state}: {self.status.error or 'not connected'}")
        cls = Command if "Command" in fields else Action
        action = cls(dict(fields), as_list=as_list)
        future = protocol.send(action, as_list=as_list)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            protocol.responses.pop(action.id, None)
            protocol.responses.pop(action.action_id, None)
            raise AmiTimeout(f"no reply to AMI {fields.get('Action')} within {timeout}s") from None

    async def action(
        self, fields: Mapping[str, Any], *, timeout: float | None = None, as_list: bool | None = None
    ) -> Any:
        """Send one action; returns a Message, or a list of Messages for EventList actions."""
        return await self._send(fields, timeout=timeout or self.action_timeout, as_list=as_list)

    async def action_ok(self, fields: Mapping[str, Any], *, timeout: float | None = None) -> Message:
        reply = await self.action(fields, timeout=timeout)
        first = reply[0] if isinstance(reply, list) else reply
        if not first.success:
            raise AmiActionFailed(str(fields.get("Action")), first.get("Message", "error"))
        return first

    async def event_list(self, fields: Mapping[str, Any], *, timeout: float | None = None) -> list[Message]:
        """Send an EventList action; returns the events (without the leading response)."""
        reply = await self.action(fields, timeout=timeout, as_list=None)
        messages = reply if isinstance(reply, list) else [reply]
        first = messages[0]
        if first.get("Response") == "Error":
            raise AmiActionFailed(str(fields.get("Action")), first.get("Message", "error"))
        return [m for m in messages if "Event" in m]

    async def command(self, cli: str, *, timeout: float | None = None) -> str:
        """Run a CLI command (needs the `command` write permission); returns its output."""
        reply = await self.action({"Action": "Command", "Command": cli}, timeout=timeout)
        if not reply.success:
            raise AmiActionFailed("Command", reply.get("Message", "error"))
        output = reply.get("Output", "")
        if isinstance(output, list):
            return "\n".join(output)
        return output or getattr(reply, "content", "") or ""

    # ------------------------------------------------------------------ events

    def on_event(self, pattern: str, handler: EventHandler) -> None:
        self._handlers.append((pattern, re.compile(fnmatch.translate(pattern), re.IGNORECASE), handler))

    def _dispatch(self, message: Message) -> None:
        name = message.get("Event", "")
        if name == "FullyBooted":
            self.status = dataclasses.replace(self.status, fully_booted=True)
        for _, regex, handler in self._handlers:
            if regex.match(name):
                try:
                    result = handler(message)
                except Exception:
                    log.exception("AMI event handler failed", extra={"event": name})
                    continue
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
