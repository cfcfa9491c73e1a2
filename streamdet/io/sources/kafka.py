"""Kafka consumer source: manual commits, rebalance callbacks, lag, window-state replay.

Offsets are committed by the daemon's :class:`~streamdet.runtime.checkpoint.Checkpoint`
only after the alerts of what was scored are acknowledged. The committed offset is the
*replay point*: the oldest event still needed to rebuild every series' window, so a restart
(or the member a partition moves to) re-reads just enough history to refill its windows.
The commit's metadata carries ``scored_through`` so rebuilt windows are not alerted twice.

Broker trouble never escapes as an exception from :meth:`KafkaSource.poll` or
:meth:`KafkaSource.lag`: it is logged, ``connected()`` turns false, and the next call tries
again. Commits do raise, so the checkpoint can retry them with backoff.
"""

from __future__ import annotations

import json
import logging
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaPartition

from streamdet.config import KafkaConfig
from streamdet.io.kafka_client import client_settings, refused_connections
from streamdet.io.sources.base import Message, PartitionsCallback, Position, TopicPartition

METADATA_MAX_AGE_MS = 30_000
# Broker calls made from the consume loop wait at most this long, so an outage slows the
# loop down but never stalls it past the health check's limit.
CALL_TIMEOUT_MS = 2_000
COMMIT_TIMEOUT_MS = 5_000
ASSIGNORS = {"cooperative-sticky": CooperativeStickyAssignor, "range": RangePartitionAssignor}
log = logging.getLogger("streamdet.kafka")


class _Listener(ConsumerRebalanceListener):
    """Forwards rebalances to the daemon. It runs on kafka-python's IO thread while the
    daemon's loop is blocked in ``poll``, so the callbacks only change in-memory state
    (blocking consumer calls are refused on that thread)."""

    def __init__(self) -> None:
        self.revoked: PartitionsCallback = lambda partitions: None
        self.assigned: PartitionsCallback = lambda partitions: None

    def on_partitions_revoked(self, revoked: set[KafkaPartition]) -> None:
        self.revoked({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: set[KafkaPartition]) -> None:
        self.assigned({(tp.topic, tp.partition) for tp in assigned})

    def on_partitions_lost(self, lost: set[KafkaPartition]) -> None:
        self.revoked({(tp.topic, tp.partition) for tp in lost})


class KafkaSource:
    def __init__(self, config: KafkaConfig, topics: list[str], max_poll_records: int = 2000):
        with refused_connections(config):
            self._connect(config, topics, max_poll_records)
        self._connected = True
        self._last_error = 0.0

    def _connect(self, config: KafkaConfig, topics: list[str], max_poll_records: int) -> None:
        extra = {}
        if config.group_instance_id:
            extra["group_instance_id"] = config.group_instance_id
        self.consumer = KafkaConsumer(
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            partition_assignment_strategy=(ASSIGNORS[config.assignment],),
            # A member that joined before its topics' metadata arrived gets no partitions
            # until the next refresh: keep that window at 30 s, not the default 5 min.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            session_timeout_ms=config.session_timeout_ms,
            **extra,
            **client_settings(config),
        )
        # Know the topics' partitions before joining the group, so the first assignment is
        # not an empty one (seen on restarts: minutes without consuming).
        for topic in topics:
            self.consumer.partitions_for_topic(topic)
        self._listener = _Listener()
        self.consumer.subscribe(topics, listener=self._listener)

    @property
    def exhausted(self) -> bool:
        return False

    def _broker_failed(self, what: str, exc: Exception) -> None:
        self._connected = False
        now = time.monotonic()
        if now - self._last_error > 10:  # one line per 10 s during an outage, not per call
            log.warning("kafka: %s failed: %s: %s", what, type(exc).__name__, exc)
            self._last_error = now

    def poll(self, timeout_ms: int) -> list[Message]:
        try:
            records = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            self._broker_failed("poll", exc)
            time.sleep(timeout_ms / 1000)
            return []
        messages = []
        for batch in records.values():
            for r in batch:
                messages.append(
                    Message(r.topic, r.partition, r.offset, r.key, r.value or b"", r.timestamp)
                )
        if messages:
            self._connected = True
        return messages

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def restart_mark(self, partition: TopicPartition) -> int:
        """``scored_through`` from the committed metadata; -1 when there is none. If the
        broker cannot say, -1 too: windows are then re-scored (duplicate alert ids), never
        lost."""
        for attempt in range(3):
            try:
                committed = self.consumer.committed(
                    KafkaPartition(*partition), metadata=True, timeout_ms=CALL_TIMEOUT_MS
                )
                break
            except KafkaError as exc:
                self._broker_failed(f"reading the commit of {partition}", exc)
                time.sleep(0.5 * 2**attempt)
        else:
            return -1
        if committed is None or not committed.metadata:
            return -1
        try:
            return int(json.loads(committed.metadata).get("scored_through", -1))
        except (ValueError, AttributeError, TypeError):
            return -1

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        payload = {
            KafkaPartition(topic, partition): OffsetAndMetadata(
                p.replay_from, json.dumps({"scored_through": p.scored_through}), -1
            )
            for (topic, partition), p in positions.items()
        }
        if payload:
            self.consumer.commit(payload, timeout_ms=COMMIT_TIMEOUT_MS)
            self._connected = True

    def on_rebalance(self, revoked: PartitionsCallback, assigned: PartitionsCallback) -> None:
        self._listener.revoked = revoked
        self._listener.assigned = assigned

    def pause(self, partitions: set[TopicPartition]) -> None:
        owned = self.assignment()
        self.consumer.pause(*(KafkaPartition(*tp) for tp in partitions if tp in owned))

    def resume(self, partitions: set[TopicPartition]) -> None:
        self.consumer.resume(*(KafkaPartition(*tp) for tp in partitions))

    def lag(self) -> dict[TopicPartition, int]:
        """Messages behind the log end, per assigned partition ({} if the broker is away)."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self.consumer.end_offsets(assigned, timeout_ms=CALL_TIMEOUT_MS)
            lag = {
                (tp.topic, tp.partition): max(
                    int(ends[tp]) - int(self.consumer.position(tp, timeout_ms=CALL_TIMEOUT_MS)),
                    0,
                )
                for tp in assigned
                if tp in ends
            }
        except (KafkaError, KeyError, ValueError) as exc:
            self._broker_failed("reading end offsets", exc)
            return {}
        self._connected = True
        return lag

    def connected(self) -> bool:
        return self._connected

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except KafkaError as exc:
            log.warning("kafka: closing the consumer failed: %s", exc)
