"""Background tasks: fire-and-forget work a service starts from a synchronous callback (a
directory listener), kept referenced until done (asyncio holds only weak references) and awaited
at stop; and the one way a stop() cancels its task."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every task started so far has ended (their errors are theirs to log)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has really stopped."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # our caller is being cancelled too (a timeout around the stop): not ours to swallow
