"""Reconnect pacing shared by the AMI and ARI supervisors: exponential backoff with jitter."""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """`initial` doubling up to `maximum` seconds, +-20 % jitter so clients do not stampede."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        delay: float = min(self.maximum, self.initial * (2**self.attempt)) * random.uniform(0.8, 1.2)
        self.attempt += 1
        return delay


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stopping` is set meanwhile."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        pass
