"""The feedback topic, read whole by every member: operators' verdicts on alerts.

Verdicts are a changelog keyed by ``alert_id`` (the newest verdict for an alert wins), not
work to share out: a series' verdicts must reach whichever member scores that series now,
and any member may score it after a rebalance. So each member reads every partition from
the beginning, without a consumer group and without commits, and then follows the topic.
Applying a verdict twice changes nothing (idempotent by ``alert_id``), so re-reading it after
a restart is safe, and nothing is lost if the daemon stops before it commits anything.
Use a compacted topic (``cleanup.policy=compact``) keyed by ``alert_id``.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition as KafkaPartition

from streamdet.config import KafkaConfig
from streamdet.core.records import Message
from streamdet.io.kafka_client import client_settings

log = logging.getLogger("streamdet.feedback")

PARTITIONS_RECHECK_S = 30.0


class FeedbackSource:
    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **client_settings(config),
        )
        self._assigned: set[KafkaPartition] = set()
        self._next_check = 0.0
        self._last_error = 0.0

    def _assign_new_partitions(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + PARTITIONS_RECHECK_S
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        wanted = {KafkaPartition(self.topic, p) for p in partitions}
        if not wanted - self._assigned:
            if not wanted:
                log.warning("feedback topic %s does not exist (yet)", self.topic)
            return
        new = wanted - self._assigned
        self._assigned = wanted
        self.consumer.assign(sorted(wanted))
        self.consumer.seek_to_beginning(*new)

    def poll(self, timeout_ms: int = 0) -> list[Message]:
        """Whatever verdicts arrived (never raises for broker trouble: logged, retried)."""
        try:
            self._assign_new_partitions()
            if not self._assigned:
                return []
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            now = time.monotonic()
            if now - self._last_error > 10:
                log.warning("feedback topic %s: %s: %s", self.topic, type(exc).__name__, exc)
                self._last_error = now
            return []
        return [
            Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for records in batches.values()
            for r in records
        ]

    def catch_up(self, deadline_s: float) -> list[Message]:
        """What the topic holds now (read within ``deadline_s``): the verdicts given before
        this process started, to apply before its first decision."""
        read: list[Message] = []
        self._next_check = 0.0
        self._assign_new_partitions()
        if not self._assigned:
            return read
        try:
            ends = self.consumer.end_offsets(sorted(self._assigned))
        except KafkaError as exc:
            log.warning("feedback topic %s: end offsets: %s", self.topic, exc)
            return read
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if all(self.consumer.position(tp) >= end for tp, end in ends.items()):
                break
            read.extend(self.poll(200))
        return read

    def close(self) -> None:
        self.consumer.close(autocommit=False)
