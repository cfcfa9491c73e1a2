"""Exactly-once alerts (``alerts.delivery: exactly_once``): the alerts a commit covers and
the consumed offsets it writes go into one Kafka transaction.

The checkpoint keeps a transaction open between commits; the alert sink's sends land in
it, and each commit closes it with the offsets of every partition that moved
(``send_offsets_to_transaction`` with the consumer's group metadata, so a member that has
been replaced by a rebalance is fenced by the broker, KIP-447). A subscriber reading the
alert topic with ``isolation.level=read_committed`` sees an alert only once its offsets are
committed: after a kill -9 the open transaction is aborted (at once by the restarted member,
which has the same transactional id, or after ``transaction_timeout_ms``), the restarted
member re-reads from the committed offsets and raises those alerts again, once. A live
member does the same after any aborted transaction that held alerts: it reads its partitions
again from their last commit (:meth:`KafkaTransaction.rewind`) instead of sending the aborted
alerts again, so an alert is only ever committed with the offsets of the input that raised it,
whoever owns the partition by then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    ProducerFencedError,
    TransactionalIdAuthorizationFailedError,
)

from streamdet.core.errors import StreamdetError
from streamdet.core.records import Position, TopicPartition

log = logging.getLogger("streamdet.transactions")

_FATAL = (ProducerFencedError, InvalidProducerEpochError, TransactionalIdAuthorizationFailedError)


class TransactionRefused(StreamdetError):
    """The transactional id is held by another live process, or the broker refuses it:
    going on would either fight that process or never commit again. The daemon stops
    without committing, so the next owner of its partitions re-raises what it had not."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(
            f"the alert transaction was refused for good ({cause}): another running process "
            "uses this member's transactional id, or the broker does not allow it. Give each "
            "member its own alerts.transactional_id (the default is made of kafka.group_id "
            "and kafka.group_instance_id or the host name)"
        )


class Transaction(Protocol):
    """What the checkpoint needs of a transaction (one open at a time). Every method raises
    :class:`TransactionRefused` when no transaction can ever be committed again."""

    def begin(self) -> None:
        """Open one if none is open."""
        ...

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        """Write ``positions`` inside the open transaction and commit it; raises if it was
        not committed (the caller then aborts)."""
        ...

    def abort(self) -> None: ...

    def rewind(self, partitions: set[TopicPartition]) -> None:
        """Read ``partitions`` again from their last commit (what an aborted transaction
        held is raised again from there)."""
        ...

    @property
    def in_doubt(self) -> bool:
        """A commit was sent and its answer never came: it may have gone through."""
        ...

    def resolve(self) -> dict[TopicPartition, Position] | None:
        """For the commit in doubt: the positions it committed if it went through, None
        if it did not. Raises while the broker cannot say (it stays in doubt)."""
        ...


class OffsetSource(Protocol):
    def transaction_offsets(self, positions: dict[TopicPartition, Position]) -> object:
        """``positions`` as the offsets a transaction commits."""
        ...

    def group_metadata(self) -> object: ...

    def committed_offsets(self, partitions: set[TopicPartition]) -> object:
        """The group's committed offsets of ``partitions``, as :meth:`transaction_offsets`
        gives them (raises while the broker cannot say)."""
        ...

    def rewind(self, partitions: set[TopicPartition]) -> None:
        """Read ``partitions`` again from their last commit."""
        ...


class TransactionStalled(KafkaError):
    """A transactional call did not finish within its deadline (kafka-python waits for ever:
    seen after a broker restart, a request to the transaction coordinator never answered)."""

    retriable = True


class KafkaTransaction:
    """A transactional producer's transactions, with the consumer's offsets in them.

    Every transactional call has a deadline (``timeout_s``). A call that misses it leaves the
    producer unusable, so it is closed and replaced by a new one with the same
    transactional id, whose initialisation fences the old one and aborts its transaction;
    ``sinks`` (the alert sink) are handed the new producer. The checkpoint then has the
    aborted transaction's partitions read again from their last commit (:meth:`rewind`).

    A commit whose answer never came is *in doubt*: the broker may have written it (a
    broker restart between the two, seen in the chaos soak, where sending its alerts again
    repeated 2,391 of them). :meth:`resolve` settles it once the broker answers: the new
    producer's initialisation lets the broker finish (or abort) the old transaction, and
    the group's committed offsets then say whether it went through.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        source: OffsetSource,
        remake: Callable[[], KafkaProducer] | None = None,
        sinks: Sequence[Any] = (),
        timeout_s: float = 10.0,
    ) -> None:
        self.producer = producer
        self.source = source
        self.remake = remake
        self.sinks = list(sinks)
        self.timeout_s = timeout_s
        self.replaced = 0
        # Aborts whatever a killed process with the same transactional id left open.
        producer.init_transactions()
        self._open = False
        self._stalled = False
        self._doubted: dict[TopicPartition, Position] | None = None

    def begin(self) -> None:
        if self._stalled:
            self._replace()
        if not self._open:
            self._checked(self.producer.begin_transaction)
            self._open = True

    def _replace(self) -> None:
        """A new producer with the same transactional id (raises while the broker is away;
        the next ``begin`` tries again)."""
        if self.remake is None:
            raise TransactionStalled("the transactional producer is stuck and cannot be remade")
        fresh = self.remake()
        try:
            fresh.init_transactions()
        except Exception:
            fresh.close(timeout=0)
            raise
        stuck, self.producer = self.producer, fresh
        for sink in self.sinks:
            sink.producer = fresh
        self._stalled, self._open = False, False
        self.replaced += 1
        log.warning("replaced the stuck transactional producer (%d so far)", self.replaced)
        _in_thread(lambda: stuck.close(timeout=0), 5.0)  # never wait on the stuck one

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        if self._doubted is not None:
            raise TransactionStalled("a commit in doubt is not resolved yet")
        self.begin()
        if positions:
            offsets = self.source.transaction_offsets(positions)
            metadata = self.source.group_metadata()
            self._checked(lambda: self.producer.send_offsets_to_transaction(offsets, metadata))
        try:
            self._checked(self.producer.commit_transaction)
        except TransactionStalled:
            self._doubted = dict(positions)
            raise
        self._open = False

    @property
    def in_doubt(self) -> bool:
        return self._doubted is not None

    def resolve(self) -> dict[TopicPartition, Position] | None:
        if self._doubted is None:
            return None
        self._replace()  # returns once the broker has finished the old transaction
        doubted = self._doubted
        committed = self.source.committed_offsets(set(doubted)) if doubted else {}
        went_through = bool(doubted) and committed == self.source.transaction_offsets(doubted)
        self._doubted = None
        log.warning(
            "the alert transaction whose commit went unanswered %s",
            "went through" if went_through else "did not go through: its alerts go out again",
        )
        return doubted if went_through else None

    def rewind(self, partitions: set[TopicPartition]) -> None:
        self.source.rewind(partitions)

    def abort(self) -> None:
        if not self._open or self._stalled:
            return
        self._open = False
        try:
            self._checked(self.producer.abort_transaction)
        except TransactionRefused:
            raise
        except KafkaError as exc:  # the broker is away: the transaction times out on its own
            log.warning("aborting the alert transaction failed (%s: %s)", type(exc).__name__, exc)

    def _checked(self, call: Callable[[], object]) -> None:
        try:
            _in_thread(call, self.timeout_s)
        except TransactionStalled:
            self._stalled = True
            raise
        except KafkaError as exc:
            if isinstance(exc, _FATAL) or self._fatal():
                raise TransactionRefused(exc) from exc
            raise

    def _fatal(self) -> bool:
        # After a fatal error kafka-python raises a plain KafkaError that only names it;
        # its transaction manager knows (no public accessor in kafka-python 3.0).
        manager = getattr(self.producer, "_transaction_manager", None)
        return bool(manager is not None and manager.has_fatal_error())


def _in_thread(call: Callable[[], object], timeout_s: float) -> None:
    """``call()`` with a deadline: raises what it raised, or :class:`TransactionStalled`
    (the call is left waiting in its daemon thread)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="streamdet-transaction", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise TransactionStalled(f"no answer within {timeout_s:.0f}s")
    if outcome[0] is not None:
        raise outcome[0]
