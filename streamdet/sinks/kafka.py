"""Kafka sinks: alerts and dead letters, each send's delivery checked before returning.

``producer.flush()`` alone does not raise when a send failed, so every future is awaited
with ``get()``; a failure propagates and the daemon does not commit the offsets.
"""

from __future__ import annotations

import json
from typing import Any

from kafka import KafkaProducer

from streamdet.config import KafkaConfig
from streamdet.kafka_client import client_settings
from streamdet.sinks.alerts import cloudevent_headers
from streamdet.sources.base import Message


def make_producer(config: KafkaConfig) -> KafkaProducer:
    return KafkaProducer(acks="all", retries=5, linger_ms=5, **client_settings(config))


class KafkaAlertSink:
    """Alerts as JSON, keyed by series, with CloudEvents binary-mode headers."""

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def publish(self, alerts: list[dict[str, Any]]) -> None:
        futures = [
            self.producer.send(
                self.topic,
                key=alert["series"].encode(),
                value=json.dumps(alert, sort_keys=True).encode(),
                headers=cloudevent_headers(alert),
            )
            for alert in alerts
        ]
        self.producer.flush(timeout=self.timeout_s)
        for future in futures:
            future.get(timeout=self.timeout_s)


class KafkaDeadLetterSink:
    """The raw message, with the reason and its source position in headers."""

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self._pending: list[Any] = []

    def send(self, message: Message, reason: str, detail: str) -> None:
        headers = [
            ("streamdet_reason", reason.encode()),
            ("streamdet_error", detail.encode()[:1000]),
            ("streamdet_source_topic", message.topic.encode()),
            ("streamdet_source_partition", str(message.partition).encode()),
            ("streamdet_source_offset", str(message.offset).encode()),
        ]
        self._pending.append(
            self.producer.send(self.topic, key=message.key, value=message.value, headers=headers)
        )

    def confirm(self) -> None:
        """Wait for every dead letter sent so far; raise if one was not delivered."""
        if not self._pending:
            return
        self.producer.flush(timeout=self.timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=self.timeout_s)
