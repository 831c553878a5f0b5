"""Failed admin logins per client address: after `max_failures` within `window_s`, that address
is refused (429 + Retry-After) until the oldest counted failure leaves the window.

Pure and clock-injected, so the rule is tested without waiting. A correct password from an
address clears its failures; a refused address is refused even with the right password, or
guessing would go on at full speed. Counted per address (aiohttp's `request.remote`): behind a
reverse proxy every client shares the proxy's address, which throttles everyone together; that
is the safe side.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_ADDRESSES = 10_000  # memory bound: the least recently seen address is forgotten first


class LoginThrottle:
    def __init__(
        self, *, max_failures: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds the address must wait, or None when it may try."""
        times = self._recent(address)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - self._clock()))

    def failed(self, address: str) -> int:
        """Count a failure; returns how many are in the window now."""
        times = self._recent(address)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.max_failures)
            if len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
        times.append(self._clock())
        self._failures.move_to_end(address)
        return len(times)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _recent(self, address: str) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        horizon = self._clock() - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times
