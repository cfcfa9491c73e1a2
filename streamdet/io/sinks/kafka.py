"""Kafka sinks: alerts and dead letters, each send's delivery checked (the contract of
:mod:`streamdet.io.sinks.base`): the outbox commits nothing past what a sink has not stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamdet.config import KafkaConfig
from streamdet.io.kafka_client import client_settings
from streamdet.io.sinks.alerts import alert_json, cloudevent_headers
from streamdet.io.sinks.dead_letter import DeadLetter


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


# A send that is not acknowledged within this is reported as failed; the outbox keeps the
# alert or dead letter and sends it again later (the broker de-duplicates nothing, the
# subscriber does, by alert_id).
SEND_TIMEOUT_S = 5.0
# Brokers refuse records over message.max.bytes (1 MiB by default): a dead letter is cut
# below that, and its original size goes in a header.
MAX_DEAD_LETTER_BYTES = 900_000


def _send_all(
    producer: KafkaProducer, topic: str, records: list[dict[str, Any]], timeout_s: float
) -> list[Exception | None]:
    """Send every record, flush, and wait for each acknowledgement (``flush()`` alone does
    not raise when a send failed)."""
    futures: list[Any] = []
    for record in records:
        try:
            futures.append(producer.send(topic, **record))
        except KafkaError as exc:  # no metadata yet, buffer full: reported, sent again later
            futures.append(exc)
    producer.flush(timeout=timeout_s)
    results: list[Exception | None] = []
    for future in futures:
        if isinstance(future, Exception):
            results.append(future)
            continue
        try:
            future.get(timeout=timeout_s)
            results.append(None)
        except Exception as exc:  # whatever the client raises, the item is kept and resent
            results.append(exc)
    return results


class KafkaAlertSink:
    """Alerts as JSON, keyed by series, with CloudEvents binary-mode headers."""

    name = "alerts-kafka"

    def __init__(
        self, producer: KafkaProducer, topic: str, timeout_s: float = SEND_TIMEOUT_S
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def deliver(self, alerts: Sequence[dict[str, Any]]) -> list[Exception | None]:
        records = [
            {
                "key": alert["series"].encode(),
                "value": alert_json(alert).encode(),
                "headers": cloudevent_headers(alert),
            }
            for alert in alerts
        ]
        return _send_all(self.producer, self.topic, records, self.timeout_s)


class KafkaDeadLetterSink:
    """The raw message, with the reason and its source position in headers."""

    name = "dead-letters-kafka"

    def __init__(
        self, producer: KafkaProducer, topic: str, timeout_s: float = SEND_TIMEOUT_S
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def deliver(self, letters: Sequence[DeadLetter]) -> list[Exception | None]:
        return _send_all(self.producer, self.topic, [_record(x) for x in letters], self.timeout_s)


def _record(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    value = message.value
    headers = [
        ("streamdet_reason", letter.reason.encode()),
        ("streamdet_error", letter.detail.encode("utf-8", "replace")[:1000]),
        ("streamdet_source_topic", message.topic.encode("utf-8", "replace")),
        ("streamdet_source_partition", str(message.partition).encode()),
        ("streamdet_source_offset", str(message.offset).encode()),
    ]
    if len(value) > MAX_DEAD_LETTER_BYTES:
        headers.append(("streamdet_original_size", str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_BYTES]
    return {"key": (message.key or b"")[:1000] or None, "value": value, "headers": headers}
