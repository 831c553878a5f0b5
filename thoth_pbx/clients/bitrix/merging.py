"""Calls that may share one command: methods taking a list of items for one target.

`imconnector.send.messages` takes MESSAGES[] for one CONNECTOR + LINE and answers each item in
DATA.RESULT[], in order (bitrix24-rest.md §2; b24restdocs imconnector-send-messages.md). Fifty
chats' messages queued at once can so go as one command instead of fifty, and a portal's 50
commands per `batch` stop being the ceiling of a backlog. The client (rest.py) merges only what
is already queued; this module says how a method's calls combine and how its answer splits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Split = Callable[[Any, Sequence[int]], list[Any] | None]


@dataclass(frozen=True)
class Merge:
    """Calls with equal `same` parameters have their `items` lists concatenated in one command;
    `split` gives each call its part of the answer (None when the answer does not match)."""

    items: str
    same: tuple[str, ...]
    split: Split
    # A merged command is parsed by the portal's PHP like a query string; ~13 fields per message
    # x 20 stays far below max_input_vars (1000 by default), and BATCH_BYTES bounds it too.
    max_calls: int = 20

    def target(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(str(params.get(name)) for name in self.same)

    def count(self, params: Mapping[str, Any]) -> int:
        items = params.get(self.items)
        return len(items) if isinstance(items, list | tuple) else 1

    def combine(self, calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        merged = dict(calls[0])
        merged[self.items] = [item for params in calls for item in _as_items(params.get(self.items))]
        return merged


def _as_items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def split_data_result(result: Any, counts: Sequence[int]) -> list[Any] | None:
    """`{SUCCESS, DATA: {RESULT: [...]}}` cut into one such answer per call, SUCCESS per part."""
    if not isinstance(result, dict):
        return None
    data = result.get("DATA")
    if not isinstance(data, dict):
        return None
    entries = data.get("RESULT")
    if not isinstance(entries, list) or len(entries) != sum(counts):
        return None
    parts: list[Any] = []
    start = 0
    for count in counts:
        mine = entries[start : start + count]
        start += count
        success = all(isinstance(e, dict) and e.get("SUCCESS", True) not in (False, "N", 0) for e in mine)
        parts.append(result | {"SUCCESS": success, "DATA": data | {"RESULT": mine}})
    return parts


SEND_MESSAGES = Merge(items="MESSAGES", same=("CONNECTOR", "LINE"), split=split_data_result)
"""imconnector.send.messages: one line's messages, several chats, one command."""
