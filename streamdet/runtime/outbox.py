"""The outbox: alerts and dead letters on their way out, under one delivery contract.

Both kinds are added as the loop produces them and sent by :meth:`Outbox.flush` through
every sink of their kind (the alert topic and the alerts file, say). Each item is tracked per
sink: one that a sink did not acknowledge is kept and sent again to that sink alone after one
shared backoff, and until every sink has it, its source position stays pending (the
checkpoint commits nothing past it). Windows scored meanwhile are settled, and their
end-to-end latency observed, once everything before them is delivered.

>>> from streamdet.core.records import Message
>>> from streamdet.io.sinks.dead_letter import DeadLetter
>>> class Flaky:
...     name, calls = "flaky", 0
...     def deliver(self, items):
...         self.calls += 1
...         return [RuntimeError("down") if self.calls == 1 else None for _ in items]
>>> outbox = Outbox(alert_sinks=[], dead_letter_sinks=[Flaky()])
>>> outbox.add_dead_letter(DeadLetter(Message("t", 0, 7, None, b"", 0), "too_large", ""))
>>> outbox.flush(now=0.0), outbox.pending()
(False, {('t', 0): (7, 7)})
>>> outbox.flush(now=0.1), outbox.flush(now=1.0), outbox.pending()
(False, True, {})
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamdet.core.backoff import Backoff
from streamdet.core.records import Pending, TopicPartition, Window, note_pending
from streamdet.io.sinks.base import Sink
from streamdet.io.sinks.dead_letter import DeadLetter

log = logging.getLogger("streamdet.outbox")


@dataclass
class Outgoing:
    """One alert or dead letter, the source position it stands for, and the sinks that
    have not stored it yet."""

    kind: str  # "alert" or "dead_letter"
    record: Any
    key: TopicPartition
    start_offset: int
    end_offset: int
    waiting: set[str] = field(default_factory=set)
    # Transactional sinks that took it inside the open transaction (not final until commit).
    staged: set[str] = field(default_factory=set)


class Outbox:
    def __init__(
        self,
        alert_sinks: Sequence[Sink[Any]],
        dead_letter_sinks: Sequence[Sink[Any]],
        backoff: Backoff | None = None,
        on_delivered: Callable[[Outgoing], None] = lambda item: None,
        on_failure: Callable[[Outgoing, Exception], None] = lambda item, exc: None,
        on_settled: Callable[[list[float], float], None] = lambda received_at, now: None,
    ) -> None:
        self.sinks = {"alert": list(alert_sinks), "dead_letter": list(dead_letter_sinks)}
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.on_delivered = on_delivered
        self.on_failure = on_failure
        self.on_settled = on_settled
        self._items: list[Outgoing] = []
        # Stored by every sink, but by a transactional one inside the open transaction.
        self._staged: list[Outgoing] = []
        self._transactional = {
            sink.name
            for sinks in self.sinks.values()
            for sink in sinks
            if getattr(sink, "transactional", False)
        }
        self._settling: list[float] = []  # when each scored window's last event arrived
        self.delivered = {"alert": 0, "dead_letter": 0}
        self.failures = {"alert": 0, "dead_letter": 0}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[Outgoing]:
        """What is not delivered to every sink yet, oldest first."""
        return self._items

    def _add(self, item: Outgoing) -> None:
        item.waiting = {sink.name for sink in self.sinks[item.kind]}
        if item.waiting:
            self._items.append(item)
        else:
            self.on_delivered(item)

    def add_alert(self, alert: dict[str, Any], window: Window) -> None:
        self._add(Outgoing("alert", alert, window.key, window.start_offset, window.end_offset))

    def add_dead_letter(self, letter: DeadLetter) -> None:
        message = letter.message
        key = (message.topic, message.partition)
        self._add(Outgoing("dead_letter", letter, key, message.offset, message.offset))

    def track(self, windows: Sequence[Window]) -> None:
        """Scored windows whose verdict is final once everything before them is out."""
        self._settling.extend(window.received_at for window in windows)

    def confirm(self) -> None:
        """The open transaction committed: what it held is delivered for good."""
        staged, self._staged = self._staged, []
        for item in staged:
            item.staged = set()
            self._finish(item)

    @property
    def staged(self) -> bool:
        """Something went out inside the open transaction."""
        return bool(self._staged)

    def discard(self, partitions: set[TopicPartition] | None = None) -> int:
        """Forget what ``partitions`` (every partition: None) still has to deliver, staged in
        the open transaction included: their input is read again from their last commit
        (by this member or the partition's next owner), which raises it again. Sent from
        here too, a read_committed subscriber would read it twice. How many were dropped."""
        gone = [i for i in self._items + self._staged if partitions is None or i.key in partitions]
        if gone:
            kept = set(map(id, gone))
            self._items = [i for i in self._items if id(i) not in kept]
            self._staged = [i for i in self._staged if id(i) not in kept]
        return len(gone)

    def pending(self) -> Pending:
        """Per partition, the lowest offsets of what is not delivered to every sink, but for
        what is inside the open transaction already (committed with its offsets, or read
        again if the transaction is aborted)."""
        pending: Pending = {}
        for item in self._items:
            if not item.staged:
                note_pending(pending, item.key, item.start_offset, item.end_offset)
        return pending

    def flush(
        self, now: float, force: bool = False, through: dict[TopicPartition, int] | None = None
    ) -> bool:
        """Send what is pending (after the backoff, unless ``force``: the last flush before
        the daemon exits); True when nothing is left. With ``through``, only what stands
        for input at or below its partition's offset there is sent (the rest waits)."""
        if self._items and (force or self.backoff.ready(now)):
            self._send(now, through)
        if self._items:
            return False
        if self._settling:
            self.on_settled(self._settling, now)
            self._settling = []
        return True

    def _finish(self, item: Outgoing) -> None:
        self.delivered[item.kind] += 1
        self.on_delivered(item)

    def _send(self, now: float, through: dict[TopicPartition, int] | None = None) -> None:
        failed: Exception | None = None
        ready = [
            i for i in self._items if through is None or i.end_offset <= through.get(i.key, -1)
        ]
        for kind, sinks in self.sinks.items():
            for sink in sinks:
                items = [i for i in ready if i.kind == kind and sink.name in i.waiting]
                if not items:
                    continue
                try:
                    results = sink.deliver([i.record for i in items])
                except Exception as exc:  # a sink that broke its contract: all kept
                    results = [exc] * len(items)
                for item, result in zip(items, results, strict=True):
                    if result is None:
                        item.waiting.discard(sink.name)
                        if sink.name in self._transactional:
                            item.staged.add(sink.name)
                        continue
                    failed = result
                    self.failures[kind] += 1
                    self.on_failure(item, result)
        done = [i for i in self._items if not i.waiting]
        self._items = [i for i in self._items if i.waiting]
        for item in done:
            if item.staged:
                self._staged.append(item)
            else:
                self._finish(item)
        if failed is None:
            self.backoff.succeeded()
            return
        delay = self.backoff.failed(now)
        log.warning(
            "%d alert(s) or dead letter(s) not delivered (%s: %s); retrying in %.1fs",
            len(self._items),
            type(failed).__name__,
            failed,
            delay,
        )
