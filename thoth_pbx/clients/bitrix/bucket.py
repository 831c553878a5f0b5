"""The portal's leaky bucket, mirrored on our side so we never trip QUERY_LIMIT_EXCEEDED.

Bitrix24 counts every HTTP request into a per-portal counter that drains at `rate` per
second and blocks requests once it passes `burst` (2/50 on standard plans, 5/250 on
Enterprise; limits.md). We keep the same counter locally and wait before a request
would push it over `burst - headroom`. The headroom absorbs the jitter between the
moment we send and the moment the portal counts (a request delayed on the network
arrives closer to the next one) and a portal that drains once per second instead of
continuously. A batch is one HTTP request, which is why batching multiplies throughput.

Several instances on one PostgreSQL count into one bucket per portal (`SharedBucket`): each
request reserves its place with one statement that drains and adds in one go and answers how
long to wait before sending (outbox/rate.py), so the total never passes what one process would
send. The client (rest.py) sees the same interface either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


def default_headroom(rate: float, burst: int) -> int:
    """A few requests' worth of slack: >= 1 s of drain, 10 % of the burst, never the whole bucket."""
    wanted = max(3, int(rate) + 1, burst // 10)
    return min(wanted, max(burst - 1, 0))


class Bucket(Protocol):
    """What the client needs of a portal's bucket (one process's, or shared by all instances)."""

    rate: float
    burst: int
    capacity: float
    shared: bool

    @property
    def level(self) -> float: ...

    def delay(self) -> float: ...

    def take(self) -> None: ...

    def saturate(self) -> None: ...

    async def claim(self) -> None: ...

    async def acquire(self) -> None: ...


class LeakyBucket:
    """Counter that drains at `rate`/s; `delay()` says how long until one more request fits."""

    shared = False

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        headroom: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        level: float = 0.0,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.headroom = default_headroom(rate, burst) if headroom is None else headroom
        self.capacity = max(1.0, float(self.burst - self.headroom))
        self._clock = clock
        self._level = max(0.0, float(level))  # > 0 when a previous process may have filled it
        self._stamp = clock()

    @property
    def level(self) -> float:
        self._drain()
        return self._level

    def _drain(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds to wait before `take()` keeps the counter within capacity (0 = now)."""
        self._drain()
        over = self._level + 1.0 - self.capacity
        return 0.0 if over <= 0 else over / self.rate

    def take(self) -> None:
        self._drain()
        self._level += 1.0

    async def claim(self) -> None:
        """Count one request about to be sent (the caller saw `delay()` at 0): no wait here."""
        self.take()

    def set_level(self, level: float) -> None:
        """The level as of now, as told by someone who counts more than this process."""
        self._level = max(0.0, level)
        self._stamp = self._clock()

    def saturate(self) -> None:
        """The portal said QUERY_LIMIT_EXCEEDED: someone else shares the bucket; assume it is full."""
        self._drain()
        self._level = max(self._level, float(self.burst))

    async def acquire(self) -> None:
        """Wait for room, then count one request."""
        while True:
            wait = self.delay()
            if wait <= 0:
                self.take()
                return
            await asyncio.sleep(wait)


# Reserve one request in the shared bucket: (fill, initial level for a new row) -> the level
# after counting it, as of the statement's start. `fill`: the portal said QUERY_LIMIT_EXCEEDED.
Reserve = Callable[[bool, float], Awaitable[float]]


class SharedBucket:
    """A portal's bucket counted by the database, for every instance at once.

    `claim()` is one statement (the reservation) and then the wait it implies: a reservation
    past capacity waits until the bucket has drained to it, so requests leave no faster than the
    portal drains whoever made them. A local mirror of the last answer (plus this process's own
    requests) keeps `delay()` cheap, so an idle client still sends at once."""

    shared = True

    def __init__(
        self,
        rate: float,
        burst: int,
        reserve: Reserve,
        *,
        headroom: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        level: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._mirror = LeakyBucket(rate, burst, headroom=headroom, clock=clock, level=level)
        self.rate, self.burst, self.headroom = self._mirror.rate, self._mirror.burst, self._mirror.headroom
        self.capacity = self._mirror.capacity
        self._initial = max(0.0, float(level))
        self._reserve = reserve
        self._fill = False
        self._sleep = sleep
        self.reservations = 0  # statements run (one per request)

    @property
    def level(self) -> float:
        return self._mirror.level

    def delay(self) -> float:
        return self._mirror.delay()

    def take(self) -> None:
        raise RuntimeError("a shared bucket is taken with `await claim()` (one statement per request)")

    def saturate(self) -> None:
        """QUERY_LIMIT_EXCEEDED: full here at once, and in the database with the next reservation."""
        self._mirror.saturate()
        self._fill = True

    async def claim(self) -> None:
        fill, self._fill = self._fill, False
        self.reservations += 1
        try:
            level = await self._reserve(fill, self._initial)
        except Exception as exc:  # the database is away: count on our own, as one process does
            log.warning("shared rate limit unreachable; counting locally", extra={"error": type(exc).__name__})
            self._fill = self._fill or fill
            self._mirror.take()
            level = self._mirror.level
        else:
            self._mirror.set_level(level)
        wait = (level - self.capacity) / self.rate
        if wait > 0:
            await self._sleep(wait)

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:  # our own mirror already knows: no statement to learn it
            await self._sleep(wait)
        await self.claim()
