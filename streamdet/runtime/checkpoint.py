"""The checkpoint: what is committed for each partition, when, and in which order.

Two kinds of progress are kept apart:

* the **restart mark** of a partition: ``scored_through`` as read from the last commit when
  this process started reading the partition (at start-up or when a rebalance handed it
  over). Windows rebuilt from replayed events that end at or before it were scored by an
  earlier owner and are not scored again;
* **in-process progress**: offsets consumed, and the work every stage still holds (windows
  not yet scored, events held for reordering, alerts and dead letters not yet delivered). It
  decides what the next commit says, and never suppresses a window.

:meth:`Checkpoint.commit` owns the commit order (after quixstreams' ``Checkpoint.commit``):
(1) flush the outbox, (2) ask every stage what it still holds, (3) compute each owned
partition's position from that, (4) commit it. A failed commit (rebalance in progress,
coordinator moved, broker away) is retried with backoff; it never ends the loop. Partitions
this member no longer owns are never committed.

>>> from streamdet.core.records import Message
>>> from streamdet.runtime.outbox import Outbox
>>> class Memory:
...     def __init__(self): self.committed = {}
...     def restart_mark(self, tp): return -1
...     def assignment(self): return None
...     def commit(self, positions): self.committed.update(positions)
>>> class Windows:
...     def pending(self): return {("t", 0): (8, 9)}
...     def replay_points(self, exact=False): return {("t", 0): 7}
>>> source = Memory()
>>> checkpoint = Checkpoint(source, Outbox([], []), [Windows()], interval_s=0)
>>> for offset in range(10):
...     checkpoint.consumed(Message("t", 0, offset, None, b"", 0))
>>> checkpoint.commit(now=1.0)
True
>>> source.committed[("t", 0)]
Position(replay_from=7, scored_through=8, consumed=10)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from streamdet.core.backoff import Backoff
from streamdet.core.records import Message, Pending, Position, TopicPartition, merge_pending
from streamdet.io.sources.base import Source
from streamdet.io.transactions import Transaction, TransactionRefused
from streamdet.runtime.outbox import Outbox

log = logging.getLogger("streamdet.checkpoint")


class Stage(Protocol):
    """Anything that holds consumed work not yet finished (the checkpoint asks it)."""

    def pending(self) -> Pending:
        """Per partition, the lowest start and end offsets of work it still holds."""
        ...

    def replay_points(self, exact: bool = False) -> dict[TopicPartition, int]:
        """Per partition, the oldest offset it needs re-read after a restart (windows). Not
        ``exact``: possibly older than needed (computed a while ago), never newer."""
        ...


class Checkpoint:
    """Offsets, restart marks and the commit of one consumer."""

    def __init__(
        self,
        source: Source,
        outbox: Outbox,
        stages: Sequence[Stage],
        interval_s: float,
        max_replay_lag: int | None = None,
        backoff: Backoff | None = None,
        on_failure: Callable[[Exception], None] = lambda exc: None,
        transaction: Transaction | None = None,
        on_rewind: Callable[[set[TopicPartition]], None] = lambda partitions: None,
    ) -> None:
        self.source = source
        # alerts.delivery: exactly_once: alerts and offsets are committed in one transaction.
        self.transaction = transaction
        self.outbox = outbox
        self.stages = list(stages)
        self.interval_s = interval_s
        self.max_replay_lag = max_replay_lag
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.on_failure = on_failure
        # Told which partitions are read again from their last commit (drop their windows).
        self.on_rewind = on_rewind
        self.rewinds = 0
        self.failures: dict[str, int] = {}
        self._next: dict[TopicPartition, int] = {}
        self._marks: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, Position] = {}
        self._last_commit = 0.0
        # Wall-clock time of the last commit that succeeded (None: none yet).
        self.last_success: float | None = None

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
        """Forget partitions another member now owns (or the group took back): never commit
        them again.

        With a transaction, what they still have to deliver is left to whoever reads them
        next (their commit kept it back, so it is raised again there). An open transaction
        that already holds alerts can no longer be committed with their offsets: it is
        aborted and every partition read again from its last commit."""
        if self.transaction is not None:
            held = self.outbox.staged
            self.outbox.discard(partitions)
            if held and not self.transaction.in_doubt:
                self.transaction.abort()
                self._rewind(f"{sorted(partitions)} left this member inside a transaction")
        self._forget(partitions)

    def _forget(self, partitions: set[TopicPartition]) -> None:
        for key in partitions:
            self._next.pop(key, None)
            self._marks.pop(key, None)
            self._committed.pop(key, None)

    def assign(self, partitions: set[TopicPartition]) -> None:
        """New partitions: their restart marks are read fresh on their first message."""
        self._forget(partitions)

    def settle(self, partitions: set[TopicPartition]) -> dict[TopicPartition, Position]:
        """Exact positions of ``partitions``, which a rebalance is about to hand to another
        member (the group may already list them as gone): the source commits them at once.
        Windows not scored yet and alerts not delivered yet keep them back, so the next
        owner scores those windows (and re-raises those alerts, with their ``alert_id``).

        With a transaction, the open one is committed here, with every partition's position
        (its alerts may be of any of them), and nothing is left for the source to commit."""
        if self.transaction is None:
            return self.positions(exact=True, partitions=partitions)
        owned = self.source.assignment() or set()
        positions = self.positions(exact=True, partitions=partitions | owned)
        try:
            self.transaction.commit(positions)
        except TransactionRefused:
            raise
        except Exception as exc:
            self._abort(exc, time.monotonic())
            return {}
        self.outbox.confirm()
        self._committed.update(positions)
        return {}

    # ---- committing ----------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return now - self._last_commit >= self.interval_s and self.backoff.ready(now)

    def positions(
        self, exact: bool = False, partitions: set[TopicPartition] | None = None
    ) -> dict[TopicPartition, Position]:
        """The position of every owned partition (or of ``partitions``) with progress since
        its last commit.

        ``max_replay_lag`` caps how far behind the consumed end the window buffers may pin
        the replay point (a silent series would otherwise pin it forever); work not yet
        finished always keeps its own.
        """
        unsettled = merge_pending(self.outbox.pending(), *(s.pending() for s in self.stages))
        replay_points: dict[TopicPartition, int] = {}
        for stage in self.stages:
            for key, offset in stage.replay_points(exact).items():
                replay_points[key] = min(replay_points.get(key, offset), offset)
        owned = self.source.assignment() if partitions is None else partitions
        positions = {}
        for key, next_offset in self._next.items():
            if owned is not None and key not in owned:
                continue
            first_start, first_end = unsettled.get(key, (next_offset, next_offset))
            buffers = replay_points.get(key, next_offset)
            if self.max_replay_lag is not None:
                buffers = max(buffers, next_offset - self.max_replay_lag)
            replay_from = min(buffers, first_start, next_offset)
            scored = max(min(first_end, next_offset) - 1, self._marks.get(key, -1))
            position = Position(replay_from, scored, next_offset)
            if self._committed.get(key) != position:
                positions[key] = position
        return positions

    def _scored_through(self) -> dict[TopicPartition, int]:
        """Per partition, the offset through which every window is scored (the mark its
        next commit can carry, whatever the outbox still holds).

        Under exactly-once an alert goes into the transaction only once its window is at or
        below this mark: committed beyond the mark (a later window of one series scored
        before an earlier one of another, a backlog released in slices), a re-read from
        that commit scores the window again and the alert is committed twice (the hour
        soak's 1,136 duplicates)."""
        unscored = merge_pending(*(stage.pending() for stage in self.stages))
        return {
            key: min(unscored.get(key, (next_offset, next_offset))[1], next_offset) - 1
            for key, next_offset in self._next.items()
        }

    def commit(self, now: float, force: bool = False) -> bool:
        """(1) flush the outbox, (2)-(3) the positions every stage allows, (4) commit;
        False (and a retry after the backoff) if the commit failed."""
        try:
            if self.transaction is not None:
                self._resolve()
                self.transaction.begin()  # the alerts flushed now belong to it
                self.outbox.flush(now, force=force, through=self._scored_through())
            else:
                self.outbox.flush(now, force=force)
            if not force and not self.due(now):
                return False
            self._last_commit = now
            positions = self.positions(exact=force)  # the last commit before a stop: exact
            if self.transaction is not None:
                self.transaction.commit(positions)
                self.outbox.confirm()
            elif positions:
                self.source.commit(positions)
        except TransactionRefused:
            raise
        except Exception as exc:  # any broker or coordinator error: retry, never crash
            self._abort(exc, now)
            return False
        self.backoff.succeeded()
        self._committed.update(positions)
        self.last_success = time.time()
        return True

    def _resolve(self) -> None:
        """A commit in doubt (its answer never came), settled before anything else: its
        alerts are delivered if it went through, and raised again if it did not."""
        assert self.transaction is not None
        if not self.transaction.in_doubt:
            return
        committed = self.transaction.resolve()
        if committed is None:
            if self.outbox.staged:
                self._rewind("the alert transaction whose commit went unanswered was not committed")
            return
        self.outbox.confirm()
        self._committed.update(committed)

    def _rewind(self, reason: str) -> None:
        """The alerts of an aborted transaction: every partition is read again from its last
        commit (by this member, or by its next owner if it moves meanwhile), which raises
        them again, with their ids, in a transaction that commits them with their offsets.
        (Sent again from the outbox instead, they reached subscribers twice whenever a
        partition moved in between: the chaos soak's duplicates after broker restarts.)"""
        assert self.transaction is not None
        partitions = (self.source.assignment() or set()) | set(self._next)
        dropped = self.outbox.discard()
        self._forget(partitions)
        self.rewinds += 1
        self.transaction.rewind(partitions)
        self.on_rewind(partitions)
        log.warning(
            "%s: %d undelivered alert(s) or dead letter(s) dropped, %d partition(s) read "
            "again from their last commit",
            reason,
            dropped,
            len(partitions),
        )

    def _abort(self, exc: Exception, now: float) -> None:
        """A failed commit: what the transaction held is raised again from the last commit
        (once known not to have been committed, for a commit in doubt)."""
        name = type(exc).__name__
        if self.transaction is not None:
            held = self.outbox.staged
            self.transaction.abort()
            if held and not self.transaction.in_doubt:
                self._rewind(f"the alert transaction was aborted ({name})")
        self.failures[name] = self.failures.get(name, 0) + 1
        delay = self.backoff.failed(now)
        log.warning("commit failed (%s: %s); retrying in %.1fs", name, exc, delay)
        self.on_failure(exc)
