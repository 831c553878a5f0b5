"""store/snapshots.py: a kept copy is used until its tables change or it is too old; a load
that raced a change is not kept."""

from __future__ import annotations

from dataclasses import dataclass

from thoth_pbx.store.snapshots import Snapshots


@dataclass
class Counter:
    generation: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self, counter: Counter | None = None, *, bump_while_loading: bool = False) -> None:
        self.loads = 0
        self.counter = counter
        self.bump = bump_while_loading

    async def __call__(self) -> str:
        self.loads += 1
        if self.bump and self.counter is not None:
            self.counter.generation += 1  # a write committed while we read
        return f"value {self.loads}"


async def test_kept_until_a_watched_table_changes() -> None:
    counter, load = Counter(), Loader()
    kept: Snapshots[str, str] = Snapshots(counter)
    assert await kept.get("k", load) == "value 1"
    assert await kept.get("k", load) == "value 1"
    counter.generation += 1
    assert await kept.get("k", load) == "value 2"
    assert load.loads == 2


async def test_too_old_is_read_again() -> None:
    clock, load = Clock(), Loader()
    kept: Snapshots[str, str] = Snapshots(Counter(), max_age=10.0, clock=clock)
    await kept.get("k", load)
    clock.now += 9.9
    assert await kept.get("k", load) == "value 1"
    clock.now += 0.2
    assert await kept.get("k", load) == "value 2"


async def test_a_load_that_raced_a_change_is_not_kept() -> None:
    counter = Counter()
    racing = Loader(counter, bump_while_loading=True)
    kept: Snapshots[str, str] = Snapshots(counter)
    assert await kept.get("k", racing) == "value 1"
    assert await kept.get("k", racing) == "value 2"  # read again: the first may predate the write


async def test_without_a_counter_every_get_loads() -> None:
    load = Loader()
    kept: Snapshots[str, str] = Snapshots(None)
    await kept.get("k", load)
    await kept.get("k", load)
    assert load.loads == 2


async def test_bounded_and_keys_apart() -> None:
    load = Loader()
    kept: Snapshots[int, str] = Snapshots(Counter(), max_entries=2)
    assert [await kept.get(k, load) for k in (1, 2)] == ["value 1", "value 2"]
    await kept.get(3, load)  # full: everything is dropped, then 3 kept
    assert await kept.get(3, load) == "value 3"
    assert await kept.get(1, load) == "value 4"
