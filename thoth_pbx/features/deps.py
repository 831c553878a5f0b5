"""What app.py hands every feature's `wire()`: the shared parts, and how a part starts and stops.

Features get their dependencies here and from the parts app.py passes explicitly (the way
wazo-calld hands its plugins their dependencies), never by importing each other's internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.core.settings import AsteriskServer, Settings
from thoth_pbx.outbox.queue import Outbox


@dataclass(frozen=True)
class AsteriskLink:
    """One configured Asterisk with the clients that talk to it (started and stopped by app.py)."""

    server: AsteriskServer
    ami: AmiClient
    ari: AriClient
    first: bool = False  # the server of the settings' top-level keys

    @property
    def stored(self) -> str | None:
        """What rows store for this server (`phone.asterisk`, `call.asterisk`...): None for the
        first, so renaming it keeps its rows (decisions D11)."""
        return None if self.first else self.server.name


@dataclass(frozen=True)
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    outbox: Outbox
    ami: AmiClient  # the first Asterisk's (settings' top-level keys)
    ari: AriClient
    more_asterisks: tuple[AsteriskLink, ...] = ()  # the `[[asterisk]]` servers, in config order

    @property
    def asterisks(self) -> tuple[AsteriskLink, ...]:
        """Every configured Asterisk, the first one first."""
        return (AsteriskLink(self.settings.asterisks[0], self.ami, self.ari, first=True), *self.more_asterisks)


async def _nothing() -> None:
    return None


def _nothing_sync() -> None:
    return None


@dataclass
class Wired:
    """A feature as app.py sees it: its routes and its place in start/stop (stopped in reverse)."""

    routes: list[web.RouteDef] = field(default_factory=list)
    start: Callable[[], None] = _nothing_sync
    stop: Callable[[], Awaitable[None]] = _nothing
