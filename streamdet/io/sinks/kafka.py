"""Kafka sinks: alerts and dead letters, each send's delivery checked (the contract of
:mod:`streamdet.io.sinks.base`): the outbox commits nothing past what a sink has not stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError

from streamdet.config import KafkaConfig
from streamdet.io.kafka_client import client_settings
from streamdet.io.sinks.alerts import kafka_record
from streamdet.io.sinks.dead_letter import DeadLetter


def make_producer(
    config: KafkaConfig, idempotent: bool = True, transactional_id: str | None = None
) -> KafkaProducer:
    """A producer whose every send is acknowledged by all in-sync replicas.

    Retries are bounded by time (``delivery_timeout_ms``), not by a count: a broker outage
    shorter than that loses nothing; a longer one fails the send, and the outbox keeps the
    alert or dead letter and sends it again. ``idempotent`` (alerts) lets the broker drop the
    producer's own retried duplicates; kafka-python then treats a record the topic refuses
    as too large as fatal to the whole producer, so dead letters, which may be as large as
    any message, get a producer of their own without it. ``transactional_id``: alerts under
    ``alerts.delivery: exactly_once``, sent inside the checkpoint's transactions.
    """
    extra: dict[str, Any] = {}
    if transactional_id is not None:
        # A transaction left open by a killed process blocks read_committed subscribers of
        # the alert topic until its restart (same id) or this timeout aborts it.
        extra = {"transactional_id": transactional_id, "transaction_timeout_ms": 30_000}
    return KafkaProducer(
        acks="all",
        enable_idempotence=idempotent or transactional_id is not None,
        **extra,
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
# The smallest a dead letter refused as too large is cut to.
MIN_DEAD_LETTER_BYTES = 1024


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
    """Alerts as CloudEvents (binary mode: JSON with ``ce_*`` headers; or structured),
    keyed by series."""

    name = "alerts-kafka"

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        timeout_s: float = SEND_TIMEOUT_S,
        cloudevents_mode: str = "binary",
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self.cloudevents_mode = cloudevents_mode
        # A transactional producer's sends belong to the checkpoint's open transaction.
        self.transactional = producer.config.get("transactional_id") is not None

    def deliver(self, alerts: Sequence[dict[str, Any]]) -> list[Exception | None]:
        records = [kafka_record(alert, self.cloudevents_mode) for alert in alerts]
        return _send_all(self.producer, self.topic, records, self.timeout_s)


class KafkaDeadLetterSink:
    """The raw message, with the reason and its source position in headers.

    A value is cut to ``max_bytes`` (the original size in ``streamdet_original_size``). A
    dead letter the topic still refuses as too large (its ``max.message.bytes`` is lower) is
    cut to half and sent again, down to 1 kB: one message no topic accepts must never hold
    its partition's commit for good.
    """

    name = "dead-letters-kafka"
    transactional = False

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        max_bytes: int = 900_000,
        timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._cut: dict[tuple[str, int, int], int] = {}

    def deliver(self, letters: Sequence[DeadLetter]) -> list[Exception | None]:
        keys = [(x.message.topic, x.message.partition, x.message.offset) for x in letters]
        records = [
            _record(x, self._cut.get(k, self.max_bytes)) for x, k in zip(letters, keys, strict=True)
        ]
        results = _send_all(self.producer, self.topic, records, self.timeout_s)
        for letter, key, result in zip(letters, keys, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):
                size = min(self._cut.get(key, self.max_bytes), len(letter.message.value))
                self._cut[key] = max(size // 2, MIN_DEAD_LETTER_BYTES)
            elif result is None:
                self._cut.pop(key, None)
        return results


def _record(letter: DeadLetter, max_bytes: int) -> dict[str, Any]:
    message = letter.message
    value = message.value
    headers = [
        ("streamdet_reason", letter.reason.encode()),
        ("streamdet_error", letter.detail.encode("utf-8", "replace")[:1000]),
        ("streamdet_source_topic", message.topic.encode("utf-8", "replace")),
        ("streamdet_source_partition", str(message.partition).encode()),
        ("streamdet_source_offset", str(message.offset).encode()),
    ]
    if len(value) > max_bytes:
        headers.append(("streamdet_original_size", str(len(value)).encode()))
        value = value[:max_bytes]
    return {"key": (message.key or b"")[:1000] or None, "value": value, "headers": headers}
