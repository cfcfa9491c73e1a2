"""Fakes shared by the pure-logic tests: a source that keeps messages and commits in memory,
and a stage that holds given work. Tests of real behaviour use the real broker instead."""

from __future__ import annotations

from collections.abc import Iterable

from streamdet.core.records import Message, Pending, Position, TopicPartition
from streamdet.io.sources.base import wall_clock_ms


class MemorySource:
    """A source over a list of messages (delivered ``batch`` at a time), with commits kept in
    a dict. ``fail`` commits raise (like a rebalance in progress); ``owned`` is the
    assignment (None: every partition, as for the simulator)."""

    def __init__(
        self,
        messages: Iterable[Message] = (),
        marks: dict[TopicPartition, int] | None = None,
        owned: set[TopicPartition] | None = None,
        batch: int = 100,
    ) -> None:
        self.messages = list(messages)
        self.batch = batch
        self.committed: dict[TopicPartition, Position] = {}
        self.marks = marks or {}
        self.owned = owned
        self.fail = 0
        self.paused: set[TopicPartition] = set()
        self._next = 0

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self.messages)

    def poll(self, timeout_ms: int) -> list[Message]:
        ready = [
            m for m in self.messages[self._next :] if (m.topic, m.partition) not in self.paused
        ]
        out = ready[: self.batch]
        self._next += len(out)
        return out

    def drop_delivered(self) -> None:
        """Let go of the messages already delivered (a test measuring memory)."""
        del self.messages[: self._next]
        self._next = 0

    def restart_mark(self, partition: TopicPartition) -> int:
        return self.marks.get(partition, -1)

    def assignment(self) -> set[TopicPartition] | None:
        return self.owned

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("RebalanceInProgressError")
        self.committed.update(positions)

    def on_rebalance(self, revoked, assigned, settle=None) -> None:
        """Never rebalanced."""

    def pause(self, partitions: set[TopicPartition]) -> None:
        self.paused |= partitions

    def resume(self, partitions: set[TopicPartition]) -> None:
        self.paused -= partitions

    def lag(self) -> dict[TopicPartition, int]:
        return {}

    def stalled(self) -> dict[TopicPartition, float]:
        return {}

    def connected(self) -> bool:
        return True

    def clock_ms(self) -> int:
        return wall_clock_ms()

    def close(self) -> None:
        """Nothing to release."""


class HeldWork:
    """A stage holding given work: what the checkpoint asks every stage."""

    def __init__(
        self, pending: Pending | None = None, replay: dict[TopicPartition, int] | None = None
    ) -> None:
        self.held = pending or {}
        self.replay = replay or {}

    def pending(self) -> Pending:
        return dict(self.held)

    def replay_points(self, exact: bool = False) -> dict[TopicPartition, int]:
        return dict(self.replay)


class RecordingSink:
    """A sink that stores what it is given; ``fail`` deliveries fail every item."""

    def __init__(self, name: str = "recording", transactional: bool = False) -> None:
        self.name = name
        self.transactional = transactional
        self.items: list = []
        self.fail = 0

    def deliver(self, items) -> list[Exception | None]:
        if self.fail:
            self.fail -= 1
            return [OSError("disk full")] * len(items)
        self.items.extend(items)
        return [None] * len(items)
