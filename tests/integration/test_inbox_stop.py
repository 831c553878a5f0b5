"""The webhook inbox dispatcher stops however its last wake-up and the stop interleave.

CI once hung 300 s in a teardown: a delivery's commit woke the dispatcher on PostgreSQL in the
same loop turns as stop() cancelled it, and Python 3.11's asyncio.wait_for returned the wake-up
instead of raising the cancellation (gh-86296). The dispatcher carried on; stop() waited forever.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.inbox import InboxDispatcher, InboxItem, RoutedPhone


async def _no_phones(session: AsyncSession, pnids: set[str]) -> dict[str, RoutedPhone]:
    return {}


async def _ignore(item: InboxItem) -> None:
    return None


async def _turns(count: int) -> None:
    """Let the loop run `count` turns: each count is one interleaving of the wake-up and the
    stop (the wake-up's waiter, its wrapper and the dispatcher resume in successive turns)."""
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.parametrize("turns", range(6))
async def test_stop_ends_the_dispatcher_woken_in_the_same_turns(
    sessions: async_sessionmaker[AsyncSession], turns: int
) -> None:
    dispatcher = InboxDispatcher(sessions, _no_phones, sweep_seconds=60.0)
    dispatcher.subscribe("messages", _ignore)
    dispatcher.start()
    await dispatcher.wait_idle()  # waiting for the next delivery
    dispatcher.notify()  # a delivery's commit
    await _turns(turns)
    stopping = asyncio.create_task(dispatcher.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    if stopping not in done:
        stopping.cancel()
        pytest.fail(f"stop() did not end the dispatcher woken {turns} loop turns before it")
    await stopping
