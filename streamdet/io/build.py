"""Where the daemon reads from and writes to, from its config: Kafka when bootstrap servers
are configured, else the embedded simulator with alerts on stdout and in a file."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamdet.config import StreamdetConfig
from streamdet.io.sinks.alerts import JsonLinesAlertSink
from streamdet.io.sinks.base import Sink
from streamdet.io.sinks.dead_letter import JsonLinesDeadLetterSink
from streamdet.io.sources.base import Source
from streamdet.io.sources.simulator import SensorSimulator, SimulatorSource

if TYPE_CHECKING:
    from streamdet.io.sources.feedback import FeedbackSource
    from streamdet.io.transactions import Transaction


@dataclass
class IO:
    source: Source
    alert_sinks: list[Sink[Any]]
    dead_letter_sinks: list[Sink[Any]]
    # Closed when the daemon stops (the Kafka producers).
    closers: list[Any] = field(default_factory=list)
    # Operators' verdicts on alerts, when a feedback topic is configured.
    feedback: FeedbackSource | None = None
    # alerts.delivery: exactly_once: alerts and consumed offsets in one Kafka transaction.
    transaction: Transaction | None = None

    def close(self) -> None:
        for closer in self.closers:
            closer()


def build_io(config: StreamdetConfig) -> IO:
    printed = JsonLinesAlertSink(config.alerts.file, echo=config.alerts.stdout)
    if config.kafka.bootstrap_servers:
        from streamdet.io.kafka_client import refused_connections
        from streamdet.io.sinks.kafka import KafkaAlertSink, KafkaDeadLetterSink, make_producer
        from streamdet.io.sources.kafka import KafkaSource

        exactly_once = config.alerts.delivery == "exactly_once"
        tid = transactional_id(config) if exactly_once else None
        with refused_connections(config.kafka):
            producer = make_producer(config.kafka, transactional_id=tid)
            letters = make_producer(config.kafka, idempotent=False)
        alert_sink = KafkaAlertSink(
            producer, config.alerts.topic, cloudevents_mode=config.alerts.cloudevents
        )
        closers = [lambda: alert_sink.producer.close(timeout=5), lambda: letters.close(timeout=5)]
        feedback = transaction = None
        try:
            source = KafkaSource(config.kafka, [t.name for t in config.topics])
            if config.feedback.topic:
                from streamdet.io.sources.feedback import FeedbackSource

                feedback = FeedbackSource(config.kafka, config.feedback.topic)
                closers.append(feedback.close)
            if exactly_once:
                from streamdet.io.transactions import KafkaTransaction

                with refused_connections(config.kafka):
                    transaction = KafkaTransaction(
                        producer,
                        source,
                        remake=lambda: make_producer(config.kafka, transactional_id=tid),
                        sinks=[alert_sink],
                    )
        except Exception:
            producer.close(timeout=1)
            letters.close(timeout=1)
            raise
        return IO(
            source,
            [alert_sink, printed],
            [KafkaDeadLetterSink(letters, config.dead_letter.topic, config.dead_letter.max_bytes)],
            closers,
            feedback,
            transaction,
        )
    sim = config.simulator
    first = config.topics[0]
    simulator = SensorSimulator(
        sim.sensors,
        sim.period,
        sim.noise,
        sim.anomaly_every,
        sim.seed,
        first_anomaly=(
            sim.first_anomaly
            if sim.first_anomaly is not None
            else first.detector.warmup_events + sim.anomaly_every
        ),
        permanent_shift_at=sim.permanent_shift_at,
        scales=sim.scales,
    )
    source = SimulatorSource(first.name, simulator, sim.rate, sim.max_events)
    return IO(source, [printed], [JsonLinesDeadLetterSink(config.dead_letter.file)])


def transactional_id(config: StreamdetConfig) -> str:
    """``alerts.transactional_id``, else one stable across this member's restarts."""
    if config.alerts.transactional_id:
        return config.alerts.transactional_id
    member = config.kafka.group_instance_id or socket.gethostname()
    return f"streamdet-{config.kafka.group_id}-{member}"
