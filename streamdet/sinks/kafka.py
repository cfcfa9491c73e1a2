"""Kafka sinks: alerts and dead letters, each send's delivery checked before returning.

``producer.flush()`` alone does not raise when a send failed, so every future is awaited
with ``get()``; a failure propagates and the daemon does not commit the offsets.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamdet.config import KafkaConfig
from streamdet.kafka_client import client_settings
from streamdet.sinks.alerts import alert_json, cloudevent_headers
from streamdet.sources.base import Message


def make_producer(config: KafkaConfig) -> KafkaProducer:
    # Retries are bounded by time (delivery_timeout_ms), not by a count: a broker outage
    # shorter than that loses nothing; a longer one fails the send, and the daemon keeps
    # the alert or dead letter and sends it again.
    return KafkaProducer(
        acks="all",
        linger_ms=5,
        delivery_timeout_ms=config.delivery_timeout_ms,
        request_timeout_ms=min(30_000, config.delivery_timeout_ms),
        max_block_ms=5_000,
        **client_settings(config),
    )


# A send that is not acknowledged within this is reported as failed; the daemon keeps the
# alert or dead letter and sends it again later (the broker de-duplicates nothing, the
# subscriber does, by alert_id).
SEND_TIMEOUT_S = 5.0


class KafkaAlertSink:
    """Alerts as JSON, keyed by series, with CloudEvents binary-mode headers."""

    def __init__(
        self, producer: KafkaProducer, topic: str, timeout_s: float = SEND_TIMEOUT_S
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def publish(self, alerts: list[dict[str, Any]]) -> None:
        futures = [
            self.producer.send(
                self.topic,
                key=alert["series"].encode(),
                value=alert_json(alert).encode(),
                headers=cloudevent_headers(alert),
            )
            for alert in alerts
        ]
        self.producer.flush(timeout=self.timeout_s)
        for future in futures:
            future.get(timeout=self.timeout_s)


# Brokers refuse records over message.max.bytes (1 MiB by default): a dead letter is cut
# below that, and its original size goes in a header.
MAX_DEAD_LETTER_BYTES = 900_000


class KafkaDeadLetterSink:
    """The raw message, with the reason and its source position in headers.

    A dead letter stays pending until the broker acknowledges it: :meth:`confirm` sends the
    failed ones again and raises, so the daemon does not commit past a message whose dead
    letter was lost.
    """

    def __init__(
        self, producer: KafkaProducer, topic: str, timeout_s: float = SEND_TIMEOUT_S
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self._pending: list[tuple[Message, list[tuple[str, bytes]], Any]] = []

    def send(self, message: Message, reason: str, detail: str) -> None:
        value = message.value
        headers = [
            ("streamdet_reason", reason.encode()),
            ("streamdet_error", detail.encode("utf-8", "replace")[:1000]),
            ("streamdet_source_topic", message.topic.encode("utf-8", "replace")),
            ("streamdet_source_partition", str(message.partition).encode()),
            ("streamdet_source_offset", str(message.offset).encode()),
        ]
        if len(value) > MAX_DEAD_LETTER_BYTES:
            headers.append(("streamdet_original_size", str(len(value)).encode()))
            value = value[:MAX_DEAD_LETTER_BYTES]
        key = (message.key or b"")[:1000] or None
        truncated = Message(message.topic, message.partition, message.offset, key, value, 0)
        self._pending.append((truncated, headers, self._send(truncated, headers)))

    def _send(self, message: Message, headers: list[tuple[str, bytes]]) -> Any:
        try:
            return self.producer.send(
                self.topic, key=message.key, value=message.value, headers=headers
            )
        except KafkaError as exc:  # no metadata yet, buffer full: confirm() sends it again
            return exc

    def confirm(self) -> None:
        """Wait for every dead letter sent so far; send failed ones again, then raise."""
        if not self._pending:
            return
        self.producer.flush(timeout=self.timeout_s)
        failed: list[tuple[Message, list[tuple[str, bytes]], Any]] = []
        error: Exception | None = None
        for message, headers, future in self._pending:
            try:
                if isinstance(future, Exception):
                    raise future
                future.get(timeout=self.timeout_s)
            except KafkaError as exc:
                error = exc
                failed.append((message, headers, self._send(message, headers)))
        self._pending = failed
        if error is not None:
            raise error
