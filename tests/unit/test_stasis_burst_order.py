"""In a burst, a call's ringing, CRM lookup and identification wait for the registers of the
whole burst, not only its own (features/calls/stasis.py `_behind_announces`): before, the first
callers rang (a CRM lookup, an originate, a card) while the last callers' registers were still
to leave. No I/O: the registers are plain futures."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from thoth_pbx.features.calls.burst import BurstWindow
from thoth_pbx.features.calls.notifier import RegisterResult
from thoth_pbx.features.calls.stasis import StasisCalls


def _calls() -> StasisCalls:
    return StasisCalls(cast(Any, None), cast(Any, None), cast(Any, None))


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_burst_call_waits_for_the_other_registers_of_its_burst() -> None:
    calls = _calls()
    loop = asyncio.get_running_loop()
    own: asyncio.Future[RegisterResult] = loop.create_future()
    later: asyncio.Future[RegisterResult] = loop.create_future()
    for registration in (own, later):
        calls._registrations.add(registration)
        registration.add_done_callback(calls._registrations.discard)
    own.set_result({"CALL_ID": "A"})
    waiting = asyncio.create_task(calls._behind_announces(own))
    await _turns()
    assert not waiting.done()  # its own register is done, a later caller's is not
    later.set_result({"CALL_ID": "B"})
    await asyncio.wait_for(waiting, 5)
    assert not calls._registrations  # done registers are forgotten


async def test_a_call_alone_does_not_wait() -> None:
    calls = _calls()
    own: asyncio.Future[RegisterResult] = asyncio.get_running_loop().create_future()
    own.set_result(None)
    await asyncio.wait_for(calls._behind_announces(own), 5)
    await asyncio.wait_for(calls.announced(), 5)


async def test_a_burst_call_waits_until_no_new_call_came_for_the_quiet_period() -> None:
    """Asterisk hands a burst's calls over a few ms apart: a moment with no call left to store
    is not the end of the burst, and bookkeeping run in it would delay the next callers."""
    loop = asyncio.get_running_loop()
    clock = [0.0]
    quiet_over: asyncio.Future[None] = loop.create_future()

    async def sleep(seconds: float) -> None:  # one clock, however many wait on it
        end = clock[0] + seconds
        await quiet_over
        clock[0] = max(clock[0], end)

    calls = StasisCalls(
        cast(Any, None), cast(Any, None), cast(Any, None), burst=BurstWindow(15, lambda: clock[0], sleep)
    )
    calls.burst.arrived(others_announcing=False)
    clock[0] += 3
    calls.burst.arrived(others_announcing=False)  # a second call 3 ms later (ms here): a burst
    own: asyncio.Future[RegisterResult] = loop.create_future()
    own.set_result({"CALL_ID": "A"})  # its register is done, none is left to announce
    waiting = asyncio.create_task(calls._behind_announces(own))
    outcomes = asyncio.create_task(calls.announced())  # what the outbox defers its outcomes to
    await _turns()
    assert not waiting.done() and not outcomes.done()
    quiet_over.set_result(None)
    await asyncio.wait_for(asyncio.gather(waiting, outcomes), 5)
    assert clock[0] == 18  # 15 ms of quiet after the second call
