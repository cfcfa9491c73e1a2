"""Exactly-once alerts (``alerts.delivery: exactly_once``): the alerts a commit covers and
the consumed offsets it writes go into one Kafka transaction.

The checkpoint keeps a transaction open between commits; the alert sink's sends land in
it, and each commit closes it with the offsets of every partition that moved
(``send_offsets_to_transaction`` with the consumer's group metadata, so a member that has
been replaced by a rebalance is fenced by the broker, KIP-447). A subscriber reading the
alert topic with ``isolation.level=read_committed`` sees an alert only once its offsets are
committed: after a kill -9 the open transaction is aborted (at once by the restarted member,
which has the same transactional id, or after ``transaction_timeout_ms``), the restarted
member re-reads from the committed offsets and raises those alerts again, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

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


class OffsetSource(Protocol):
    def transaction_offsets(self, positions: dict[TopicPartition, Position]) -> object:
        """``positions`` as the offsets a transaction commits."""
        ...

    def group_metadata(self) -> object: ...


class KafkaTransaction:
    """A transactional producer's transactions, with the consumer's offsets in them."""

    def __init__(self, producer: KafkaProducer, source: OffsetSource) -> None:
        self.producer = producer
        self.source = source
        # Aborts whatever a killed process with the same transactional id left open.
        producer.init_transactions()
        self._open = False

    def begin(self) -> None:
        if not self._open:
            self._checked(self.producer.begin_transaction)
            self._open = True

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        self.begin()
        if positions:
            offsets = self.source.transaction_offsets(positions)
            metadata = self.source.group_metadata()
            self._checked(lambda: self.producer.send_offsets_to_transaction(offsets, metadata))
        self._checked(self.producer.commit_transaction)
        self._open = False

    def abort(self) -> None:
        if not self._open:
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
            call()
        except KafkaError as exc:
            if isinstance(exc, _FATAL) or self._fatal():
                raise TransactionRefused(exc) from exc
            raise

    def _fatal(self) -> bool:
        # After a fatal error kafka-python raises a plain KafkaError that only names it;
        # its transaction manager knows (no public accessor in kafka-python 3.0).
        manager = getattr(self.producer, "_transaction_manager", None)
        return bool(manager is not None and manager.has_fatal_error())
