"""cancel_task stops a task, and never swallows a cancellation aimed at its own caller."""

from __future__ import annotations

import asyncio

import pytest

from thoth_pbx.core.tasks import cancel_task


async def test_the_task_is_cancelled_and_the_caller_goes_on() -> None:
    task = asyncio.create_task(asyncio.Event().wait())
    await cancel_task(task)
    assert task.cancelled()


async def test_a_cancellation_of_the_caller_during_the_tasks_clean_up_reaches_the_caller() -> None:
    """A stop() under a timeout: the timeout fires while the task still cleans up. Swallowed,
    the timeout would never be raised and the caller would carry on as if the stop had ended."""
    cleaning, cleaned = asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await cleaned.wait()  # cancelled again by the caller's cancellation
            raise

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)  # the task is waiting
    stopper = asyncio.create_task(cancel_task(task))
    await cleaning.wait()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert task.done()
