"""The portal's leaky bucket, mirrored on our side so we never trip QUERY_LIMIT_EXCEEDED.

Bitrix24 counts every HTTP request into a per-portal counter that drains at `rate` per
second and blocks requests once it passes `burst` (2/50 on standard plans, 5/250 on
Enterprise; limits.md). We keep the same counter locally and wait before a request
would push it over `burst - headroom`. The headroom absorbs the jitter between the
moment we send and the moment the portal counts (a request delayed on the network
arrives closer to the next one) and a portal that drains once per second instead of
continuously. A batch is one HTTP request, which is why batching multiplies throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def default_headroom(rate: float, burst: int) -> int:
    """A few requests' worth of slack: >= 1 s of drain, 10 % of the burst, never the whole bucket."""
    wanted = max(3, int(rate) + 1, burst // 10)
    return min(wanted, max(burst - 1, 0))


class LeakyBucket:
    """Counter that drains at `rate`/s; `delay()` says how long until one more request fits."""

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
