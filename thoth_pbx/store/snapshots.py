"""Frozen copies of the few rows every event reads (a portal, a line, a number and its token).

Each ORM read costs ~0.5-1 ms of CPU on a small box, and an operator's message read the same
rows four times before it reached Meta (docs/benchmarks-messages.md). A snapshot is a frozen
value loaded once and kept until a committed write to one of its tables (TableChanges: this
process at once, other instances on PostgreSQL through LISTEN/NOTIFY) or until `max_age`
(writes by another process on SQLite, such as a CLI command). A load that raced a write is
not kept. Values must be immutable: callers share them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_AGE_S = 10.0
MAX_ENTRIES = 10_000


class ChangeCounter(Protocol):
    """Bumped by every committed write to the watched tables (store/changes.py TableChanges)."""

    generation: int


class Snapshots(Generic[K, V]):
    def __init__(
        self,
        changes: ChangeCounter | None,
        *,
        max_age: float = MAX_AGE_S,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._changes = changes
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._kept: dict[K, tuple[int, float, V]] = {}

    def _generation(self) -> int:
        return self._changes.generation if self._changes is not None else -1

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The kept value of `key`, or `load()`'s (kept when nothing changed while loading).
        Without a change counter nothing is kept: every call loads."""
        generation, now = self._generation(), self._clock()
        kept = self._kept.get(key)
        if kept is not None and kept[0] == generation and now - kept[1] < self._max_age:
            return kept[2]
        value = await load()
        if self._changes is not None and self._generation() == generation:
            if len(self._kept) >= self._max_entries:
                self._kept.clear()  # bounded even when keys are many
            self._kept[key] = (generation, now, value)
        return value
