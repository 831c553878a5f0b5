"""When new calls count as one burst, and when it ends (features/calls/burst.py). Pure: the
clock and the sleep are the test's, counting whole milliseconds (exact arithmetic)."""

from __future__ import annotations

import asyncio

from thoth_pbx.features.calls.burst import BurstWindow


class Clock:
    def __init__(self) -> None:
        self.now: float = 100_000
        self.slept: list[float] = []

    def __call__(self) -> float:
        return float(self.now)


def window(clock: Clock, quiet: float = 15) -> BurstWindow:
    async def sleep(seconds: float) -> None:
        clock.slept.append(seconds)
        clock.now += seconds

    return BurstWindow(quiet, clock=clock, sleep=sleep)


def test_calls_far_apart_open_no_burst() -> None:
    clock = Clock()
    burst = window(clock)
    burst.arrived(others_announcing=False)
    assert burst.left() == 0
    clock.now += 1000
    burst.arrived(others_announcing=False)
    assert burst.left() == 0


def test_a_call_within_the_quiet_period_opens_a_burst_that_lasts_the_period_after_the_latest() -> None:
    clock = Clock()
    burst = window(clock)
    burst.arrived(others_announcing=False)
    clock.now += 5
    burst.arrived(others_announcing=False)
    assert burst.left() == 15
    clock.now += 12
    assert burst.left() == 3
    burst.arrived(others_announcing=False)  # 12 ms after the last: the burst goes on
    assert burst.left() == 15
    clock.now += 15
    assert burst.left() == 0
    clock.now += 1
    burst.arrived(others_announcing=False)  # 16 ms of quiet ended it: a new lone call
    assert burst.left() == 0


def test_a_call_that_comes_while_another_is_announced_is_in_a_burst_whatever_the_gap() -> None:
    clock = Clock()
    burst = window(clock)
    burst.arrived(others_announcing=False)
    clock.now += 500
    burst.arrived(others_announcing=True)
    assert burst.left() == 15


async def test_ended_waits_out_the_quiet_period_and_any_call_that_came_meanwhile() -> None:
    clock = Clock()
    burst = window(clock)
    await burst.ended()
    assert clock.slept == []  # no burst: no wait at all

    arrivals = iter([True])

    async def sleep(seconds: float) -> None:
        clock.slept.append(seconds)
        clock.now += seconds / 2
        if next(arrivals, False):  # a call half-way through the quiet period
            burst.arrived(others_announcing=False)
        clock.now += seconds / 2

    burst._sleep = sleep
    burst.arrived(others_announcing=False)
    clock.now += 4
    burst.arrived(others_announcing=False)
    await asyncio.wait_for(burst.ended(), 5)
    assert clock.slept == [15, 7.5]  # the call 7.5 ms in moved the end 7.5 ms on
    assert burst.left() == 0
