"""The failed-login rule, on an injected clock."""

from __future__ import annotations

from thoth_pbx.web import login_throttle
from thoth_pbx.web.login_throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_sixth_try_waits_until_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, window_s=300, clock=clock)
    for i in range(5):
        assert throttle.retry_after("10.0.0.1") is None
        assert throttle.failed("10.0.0.1") == i + 1
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") == 250  # first failure at 1000, now 1050
    assert throttle.retry_after("10.0.0.2") is None  # other addresses are not affected
    clock.now = 1300.0  # the first failure has left the window
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 10  # the second failure (1010) leaves at 1310


def test_a_success_clears_the_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_failures=2, window_s=60, clock=clock)
    throttle.failed("a")
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after("a") is None


def test_addresses_are_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(login_throttle, "MAX_ADDRESSES", 3)
    throttle = LoginThrottle(max_failures=1, window_s=60, clock=Clock())
    for address in "abcd":
        throttle.failed(address)
    assert throttle.retry_after("a") is None  # forgotten, least recently seen
    assert all(throttle.retry_after(x) == 60 for x in "bcd")
