"""What job handlers and producers see: the job, the verdicts a handler raises, handler types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.outbox.models import OutboxJob


class Retry(Exception):
    """Try the job again later (`after` seconds, else the backoff)."""

    def __init__(self, message: str, *, after: float | None = None, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.after = after
        self.maybe_delivered = maybe_delivered


class Fail(Exception):
    """Stop retrying: the job is marked failed with this message (an admin can retry it)."""


@dataclass(frozen=True)
class Job:
    """What a handler gets: the stored job plus the results of earlier jobs of its chain."""

    id: int
    kind: str
    instance_id: int | None
    chain: str | None
    payload: dict[str, Any]
    attempt: int  # 1 on the first run
    maybe_delivered: bool
    earlier: tuple[tuple[str, dict[str, Any] | None], ...] = ()

    def previous(self, kind: str) -> dict[str, Any] | None:
        """The result of the latest done job of `kind` earlier in this chain."""
        for earlier_kind, result in reversed(self.earlier):
            if earlier_kind == kind:
                found: dict[str, Any] | None = result
                return found
        return None


Handler = Callable[[Job], Awaitable[dict[str, Any] | None]]
OnDone = Callable[[AsyncSession, OutboxJob, dict[str, Any] | None], Awaitable[None]]


@dataclass(frozen=True)
class JobKind:
    handler: Handler
    on_done: OnDone | None = None
    # handlers that read `Job.previous()` get their chain's done results; long chains that
    # never look back (a chat's messages) skip that read, which grows with the chain
    history: bool = True
