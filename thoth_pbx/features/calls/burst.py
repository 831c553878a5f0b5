"""When new calls stop arriving together: the end of a burst (docs/calls.md "Bursts").

Between the arrivals of a burst the event loop must do nothing but announce: every piece of
a stored call's bookkeeping (ringback, CRM lookup, ringing, identification, the outbox's
outcomes) that runs in a gap between two arrivals makes the later callers wait whole turns of
the loop for their own announces. A gap is not the end: Asterisk hands the calls of a burst
over one by one, a few milliseconds apart, so a burst ends only once no new call came for
`BURST_QUIET_S`. A call that comes alone opens no burst and its bookkeeping never waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# No new call for this long ends a burst. Asterisk spreads 20 calls set up at once over
# 10-90 ms and 50 over 40-250 ms, 2-4 ms apart on average but with gaps past 15 ms on a busy
# box: with 15 ms, one 50-call burst in four ended in such a gap and the bookkeeping of its
# first 25 calls ran at once in front of the rest (their p99 ~100-170 ms); with 50 ms, none
# of 12 bursts of 50 did (docs/benchmarks-calls.md). The price: a burst's ringing starts
# 50 ms after its last call, and calls coming faster than 20 a second hold it back for up to
# ANNOUNCE_FIRST_MAX_S.
BURST_QUIET_S = 0.05


class BurstWindow:
    """Arrivals of new calls, and whether they still come together (clock and sleep injected
    for tests)."""

    def __init__(
        self,
        quiet_s: float = BURST_QUIET_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.quiet_s = quiet_s
        self._clock = clock
        self._sleep = sleep
        self._last = float("-inf")  # the latest arrival
        self._until = float("-inf")  # the burst, if any, lasts at least until then

    def arrived(self, others_announcing: bool) -> None:
        """A new call: it is part of a burst when an earlier one is still being announced or
        came less than the quiet period ago."""
        now = self._clock()
        if others_announcing or now - self._last < self.quiet_s:
            self._until = now + self.quiet_s
        self._last = now

    def left(self) -> float:
        """Seconds until the current burst is over (0 when there is none)."""
        return max(0.0, self._until - self._clock())

    async def ended(self) -> None:
        """Returns once no new call came for the quiet period (at once outside a burst)."""
        while (left := self.left()) > 0:
            await self._sleep(left)
