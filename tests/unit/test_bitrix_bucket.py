"""The client-side leaky bucket against a model of the portal's counter (pure, fake clock)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thoth_pbx.clients.bitrix.bucket import LeakyBucket, default_headroom
from thoth_pbx.features.portal.portals import inherited_level


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_up_to_capacity_then_one_request_per_drain_step() -> None:
    clock = Clock()
    bucket = LeakyBucket(2.0, 50, clock=clock)
    assert bucket.headroom == default_headroom(2.0, 50) == 5
    sent = 0
    while bucket.delay() == 0:
        bucket.take()
        sent += 1
    assert sent == 45
    assert bucket.delay() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.delay() == 0


def test_saturate_waits_for_the_portal_to_drain() -> None:
    clock = Clock()
    bucket = LeakyBucket(5.0, 250, clock=clock)
    bucket.saturate()
    assert bucket.delay() == pytest.approx((250 + 1 - bucket.capacity) / 5.0)


def test_an_inherited_level_starts_the_bucket_partly_full() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert inherited_level(None, 2.0, 50, now=now) == 0
    assert inherited_level(now - dt.timedelta(seconds=5), 2.0, 50, now=now) == 40
    assert inherited_level(now - dt.timedelta(minutes=5), 2.0, 50, now=now) == 0
    assert LeakyBucket(2.0, 50, level=40, clock=Clock()).delay() == 0
    assert LeakyBucket(2.0, 50, level=48, clock=Clock()).delay() == pytest.approx(2.0)  # down to 44 first


@settings(max_examples=200)
@given(
    rate=st.sampled_from([2.0, 5.0]),
    burst=st.sampled_from([50, 250, 8]),
    gaps=st.lists(st.floats(min_value=0, max_value=2.0), min_size=1, max_size=400),
    jitter=st.lists(st.floats(min_value=0, max_value=0.5), min_size=400, max_size=400),
)
def test_a_paced_client_never_trips_the_portal(rate: float, burst: int, gaps: list[float], jitter: list[float]) -> None:
    """Requests sent when `delay()` allows reach a portal (counter per limits.md, network delay
    up to 0.5 s, reordered arrivals) without ever being blocked."""
    clock = Clock()
    bucket = LeakyBucket(rate, burst, clock=clock)
    arrivals = []
    for gap, delay in zip(gaps, jitter, strict=False):  # gaps is the shorter list
        clock.now += gap  # callers arrive at arbitrary times ...
        clock.now += bucket.delay()  # ... and wait until the bucket allows
        bucket.take()
        arrivals.append(clock.now + delay)
    level, last = 0.0, None
    for at in sorted(arrivals):
        if last is not None:
            level = max(0.0, level - (at - last) * rate)
        last = at
        assert level + 1 <= burst, "the portal would answer QUERY_LIMIT_EXCEEDED"
        level += 1


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        LeakyBucket(0, 50)
