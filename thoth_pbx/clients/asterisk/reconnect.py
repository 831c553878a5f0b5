"""What the AMI and ARI clients share: one supervising task that (re)connects until stopped, and
its pacing (exponential backoff with jitter)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from thoth_pbx.core.tasks import cancel_task


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
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass


class Supervisor:
    """The one background task of a client: started once, stopped by setting `stopping` and
    cancelling it (it may be sleeping in `pause`)."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is not None:
            return
        self.stopping.clear()

        async def run() -> None:
            await self._run()

        self._task = asyncio.create_task(run(), name=self.name)

    async def stop(self) -> None:
        self.stopping.set()
        await cancel_task(self._task)
        self._task = None
