"""Kafka consumer source: manual commits, lag per partition, window-state replay on restart.

Offsets are committed by the daemon only after the alerts of what was scored are
acknowledged. The committed offset is the *replay point*: the oldest event still needed to
rebuild every series' window, so a restart re-reads just enough history to refill its ring
buffers. The commit's metadata carries ``scored_through``, the last offset already scored,
so replayed windows are rebuilt without being scored (and alerted) twice.
"""

from __future__ import annotations

import json

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from streamdet.config import KafkaConfig
from streamdet.kafka_client import client_settings
from streamdet.sources.base import Message

METADATA_MAX_AGE_MS = 30_000


class KafkaSource:
    def __init__(self, config: KafkaConfig, topics: list[str], max_poll_records: int = 2000):
        self.consumer = KafkaConsumer(
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            # A member that joined before its topics' metadata arrived gets no partitions
            # until the next refresh: keep that window at 30 s, not the default 5 min.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            **client_settings(config),
        )
        # Know the topics' partitions before joining the group, so the first assignment is
        # not an empty one (seen on restarts: minutes without consuming).
        for topic in topics:
            self.consumer.partitions_for_topic(topic)
        self.consumer.subscribe(topics)
        self._scored_through: dict[tuple[str, int], int] = {}

    def poll(self, timeout_ms: int) -> list[Message]:
        records = self.consumer.poll(timeout_ms=timeout_ms)
        messages = []
        for partition, batch in records.items():
            key = (partition.topic, partition.partition)
            if key not in self._scored_through:
                self._scored_through[key] = self._read_scored_through(partition)
            for r in batch:
                messages.append(
                    Message(r.topic, r.partition, r.offset, r.key, r.value or b"", r.timestamp)
                )
        return messages

    def _read_scored_through(self, partition: TopicPartition) -> int:
        committed = self.consumer.committed(partition, metadata=True)
        if committed is None or not committed.metadata:
            return -1
        try:
            return int(json.loads(committed.metadata).get("scored_through", -1))
        except (ValueError, AttributeError):
            return -1

    def scored_through(self, topic: str, partition: int) -> int:
        """Offsets at or below this were scored before a restart: rebuild, don't re-alert."""
        return self._scored_through.get((topic, partition), -1)

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit ``{(topic, partition): replay point}`` with the scored-through marker."""
        self.commit_positions({k: (v, v - 1) for k, v in offsets.items()})

    def commit_positions(self, positions: dict[tuple[str, int], tuple[int, int]]) -> None:
        """Commit ``{(topic, partition): (replay point, last scored offset)}``."""
        payload = {}
        for (topic, partition), (replay_from, scored) in positions.items():
            scored = max(scored, self._scored_through.get((topic, partition), -1))
            self._scored_through[(topic, partition)] = scored
            payload[TopicPartition(topic, partition)] = OffsetAndMetadata(
                replay_from, json.dumps({"scored_through": scored}), -1
            )
        if payload:
            self.consumer.commit(payload)

    def assigned(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this consumer currently owns."""
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the log end, per assigned partition."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        ends = self.consumer.end_offsets(assigned)
        return {
            (tp.topic, tp.partition): max(int(ends[tp]) - int(self.consumer.position(tp)), 0)
            for tp in assigned
        }

    def close(self) -> None:
        self.consumer.close(autocommit=False)
