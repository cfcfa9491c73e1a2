"""The checkpoint: what is committed for each partition, when, and in which order.

Two kinds of progress are kept apart:

* the **restart mark** of a partition: ``scored_through`` as read from the last commit when
  this process started reading the partition (at start-up or when a rebalance handed it
  over). Windows rebuilt from replayed events that end at or before it were scored by an
  earlier owner and are not scored again;
* **in-process progress**: offsets consumed, windows not yet scored, events held for
  reordering. It decides what the next commit says, and never suppresses a window.

The commit order is: alerts acknowledged (the scorer publishes synchronously), dead letters
confirmed, then offsets. A failed commit (rebalance in progress, coordinator moved, broker
away) is retried with exponential backoff; it never ends the loop. Partitions this member
no longer owns are never committed.

>>> from streamdet.sources.base import Message
>>> class Memory:
...     def __init__(self): self.committed = {}
...     def restart_mark(self, tp): return -1
...     def assignment(self): return None
...     def commit(self, positions): self.committed.update(positions)
>>> class NoDeadLetters:
...     def confirm(self): pass
>>> source = Memory()
>>> checkpoint = Checkpoint(source, NoDeadLetters(), interval_s=0)
>>> for offset in range(10):
...     checkpoint.consumed(Message("t", 0, offset, None, b"", 0))
>>> checkpoint.commit(replay_points={("t", 0): 7}, unsettled={("t", 0): (8, 9)}, now=1.0)
True
>>> source.committed[("t", 0)]
Position(replay_from=7, scored_through=8)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamdet.sinks.dead_letter import DeadLetterSink
from streamdet.sources.base import Message, Position, Source, TopicPartition

log = logging.getLogger("streamdet.checkpoint")

# Per partition: the lowest start offset and the lowest end offset of windows (or held
# events) that are consumed but not yet scored and acknowledged.
Unsettled = dict[TopicPartition, tuple[int, int]]


class Checkpoint:
    """Offsets, restart marks and the commit of one consumer."""

    def __init__(
        self,
        source: Source,
        dead_letters: DeadLetterSink,
        interval_s: float,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
        on_failure: Callable[[Exception], None] = lambda exc: None,
    ) -> None:
        self.source = source
        self.dead_letters = dead_letters
        self.interval_s = interval_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.on_failure = on_failure
        self._next: dict[TopicPartition, int] = {}
        self._marks: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, Position] = {}
        self._last_commit = 0.0
        self._failures = 0
        self._retry_at = 0.0

    # ---- what was consumed ---------------------------------------------------------------
    def consumed(self, message: Message) -> None:
        key = (message.topic, message.partition)
        if key not in self._marks:
            self._marks[key] = self.source.restart_mark(key)
        self._next[key] = max(self._next.get(key, -1), message.offset + 1)

    def already_scored(self, topic: str, partition: int, end_offset: int) -> bool:
        """A rebuilt window that an earlier owner (or this process before a restart) scored."""
        return end_offset <= self._marks.get((topic, partition), -1)

    def seen(self, partition: TopicPartition) -> bool:
        return partition in self._next

    def partitions(self) -> set[TopicPartition]:
        return set(self._next)

    # ---- rebalances ----------------------------------------------------------------------
    def revoke(self, partitions: set[TopicPartition]) -> None:
        """Forget partitions another member now owns: never commit them again."""
        for key in partitions:
            self._next.pop(key, None)
            self._marks.pop(key, None)
            self._committed.pop(key, None)

    def assign(self, partitions: set[TopicPartition]) -> None:
        """New partitions: their restart marks are read fresh on their first message."""
        self.revoke(partitions)

    # ---- committing ----------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return now - self._last_commit >= self.interval_s and now >= self._retry_at

    def positions(
        self,
        replay_points: dict[TopicPartition, int],
        unsettled: Unsettled,
        max_replay_lag: int | None = None,
    ) -> dict[TopicPartition, Position]:
        """The position of every owned partition with progress since its last commit.

        ``max_replay_lag`` caps how far behind the consumed end the window buffers may pin
        the replay point (a silent series would otherwise pin it forever); windows not yet
        scored always keep theirs.
        """
        owned = self.source.assignment()
        positions = {}
        for key, next_offset in self._next.items():
            if owned is not None and key not in owned:
                continue
            first_start, first_end = unsettled.get(key, (next_offset, next_offset))
            buffers = replay_points.get(key, next_offset)
            if max_replay_lag is not None:
                buffers = max(buffers, next_offset - max_replay_lag)
            replay_from = min(buffers, first_start, next_offset)
            scored = max(min(first_end, next_offset) - 1, self._marks.get(key, -1))
            position = Position(replay_from, scored)
            if self._committed.get(key) != position:
                positions[key] = position
        return positions

    def commit(
        self,
        replay_points: dict[TopicPartition, int],
        unsettled: Unsettled,
        now: float | None = None,
        force: bool = False,
        max_replay_lag: int | None = None,
    ) -> bool:
        """Confirm dead letters, then commit; False (and a retry later) if either failed."""
        now = time.monotonic() if now is None else now
        if not force and not self.due(now):
            return False
        self._last_commit = now
        try:
            self.dead_letters.confirm()
            positions = self.positions(replay_points, unsettled, max_replay_lag)
            if positions:
                self.source.commit(positions)
        except Exception as exc:  # any broker or coordinator error: retry, never crash
            self._failures += 1
            delay = min(self.retry_base_s * 2 ** (self._failures - 1), self.retry_max_s)
            self._retry_at = now + delay
            log.warning("commit failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            self.on_failure(exc)
            return False
        self._failures = 0
        self._retry_at = 0.0
        self._committed.update(positions)
        return True
