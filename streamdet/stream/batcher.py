"""Micro-batching: windows from all series wait until the batch is full or the oldest is due.

>>> batcher = MicroBatcher(max_batch=2, max_delay_ms=100)
>>> batcher.add("a", now=0.0); batcher.due(now=0.05)
False
>>> batcher.due(now=0.2)
True
>>> batcher.add("b", now=0.21); batcher.drain()
['a', 'b']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from streamdet.core.records import Pending, TopicPartition, Window, note_pending

Item = TypeVar("Item")


class MicroBatcher(Generic[Item]):
    def __init__(self, max_batch: int, max_delay_ms: int) -> None:
        self.max_batch = max_batch
        self.max_delay_s = max_delay_ms / 1000.0
        self._items: list[Item] = []
        self._oldest = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Item, now: float) -> None:
        if not self._items:
            self._oldest = now
        self._items.append(item)

    def due(self, now: float) -> bool:
        """Full, or the oldest item has waited ``max_delay_ms``."""
        if not self._items:
            return False
        return len(self._items) >= self.max_batch or now - self._oldest >= self.max_delay_s

    def items(self) -> list[Item]:
        """What waits, oldest first (a copy)."""
        return list(self._items)

    def remove_if(self, condition: Callable[[Item], bool]) -> None:
        self._items = [item for item in self._items if not condition(item)]

    def drain(self) -> list[Item]:
        items, self._items = self._items, []
        return items


class WindowBatcher(MicroBatcher[Window]):
    """Windows of every topic waiting for their batch: a stage the checkpoint asks."""

    def pending(self) -> Pending:
        pending: Pending = {}
        for window in self._items:
            note_pending(pending, window.key, window.start_offset, window.end_offset)
        return pending

    def replay_points(self, exact: bool = False) -> dict[TopicPartition, int]:
        return {}

    def drop_partitions(self, partitions: set[TopicPartition]) -> None:
        self.remove_if(lambda window: window.key in partitions)
