"""What every source hands the pipeline, and what the daemon may ask of a source.

A source delivers raw messages with their position in the stream, takes commits of
:class:`Position` (the replay point plus the last offset whose windows were all emitted),
and says which partitions it owns. Sources without consumer groups (the simulator, files)
own every partition they deliver and answer ``assignment()`` with ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from streamdet.core.records import Message, Position, TopicPartition

PartitionsCallback = Callable[[set[TopicPartition]], None]
# Given partitions about to move to another member: the positions to commit for them now.
SettleCallback = Callable[[set[TopicPartition]], dict[TopicPartition, Position]]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Source(Protocol):
    """A polled stream of messages whose progress is committed after alerts are safe."""

    @property
    def exhausted(self) -> bool:
        """True when a finite source has delivered everything (never for Kafka)."""
        ...

    def poll(self, timeout_ms: int) -> list[Message]: ...

    def assignment(self) -> set[TopicPartition] | None:
        """The partitions this member owns now; ``None``: every partition it delivers."""
        ...

    def restart_mark(self, partition: TopicPartition) -> int:
        """``scored_through`` of the last commit for ``partition`` (-1: none)."""
        ...

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        """Store ``positions``; raises if they were not stored."""
        ...

    def on_rebalance(
        self,
        revoked: PartitionsCallback,
        assigned: PartitionsCallback,
        settle: SettleCallback | None = None,
    ) -> None:
        """Call ``revoked``/``assigned`` with the partitions a group rebalance moves.
        Before partitions are handed over, ``settle`` gives their positions and the source
        commits them, so the next owner neither re-scores nor re-alerts anything."""
        ...

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop fetching ``partitions`` until :meth:`resume` (back-pressure)."""
        ...

    def resume(self, partitions: set[TopicPartition]) -> None: ...

    def lag(self) -> dict[TopicPartition, int]:
        """Messages behind the log end per owned partition (empty if unknown)."""
        ...

    def stalled(self) -> dict[TopicPartition, float]:
        """Per owned partition, the seconds it has had records waiting that the client does
        not fetch (0 when read, caught up or paused)."""
        ...

    def connected(self) -> bool:
        """False while the broker cannot be reached."""
        ...

    def clock_ms(self) -> int:
        """Now, on the clock its events' timestamps are checked against
        (``limits.max_future_ms`` / ``max_age_ms``): the wall clock for real streams."""
        ...

    def close(self) -> None: ...


class OnePartitionSource:
    """What the sources without consumer groups share (the simulator, replays): they own
    partition 0 of their one ``topic`` for good and keep commits in memory."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._paused = False
        self.committed: dict[TopicPartition, Position] = {}

    def assignment(self) -> None:
        return None

    def restart_mark(self, partition: TopicPartition) -> int:
        position = self.committed.get(partition)
        return -1 if position is None else position.scored_through

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        self.committed.update(positions)

    def on_rebalance(
        self,
        revoked: PartitionsCallback,
        assigned: PartitionsCallback,
        settle: SettleCallback | None = None,
    ) -> None:
        """Never rebalanced."""

    def pause(self, partitions: set[TopicPartition]) -> None:
        self._paused = self._paused or (self.topic, 0) in partitions

    def resume(self, partitions: set[TopicPartition]) -> None:
        self._paused = self._paused and (self.topic, 0) not in partitions

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
