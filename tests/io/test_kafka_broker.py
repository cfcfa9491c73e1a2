"""The provisioned broker is a real Kafka: kafka-python 3 produces and consumes through it."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka


def test_real_broker_round_trip_with_acknowledged_sends(kafka_bootstrap, new_topic):
    topic = new_topic("roundtrip", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    metadata = [
        producer.send(topic, key=b"s1", value=f"{i}".encode()).get(timeout=30) for i in range(20)
    ]
    producer.close()
    assert all(m.topic == topic for m in metadata)
    assert len({m.partition for m in metadata}) == 1  # one key, one partition
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id="roundtrip",
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    values = [int(record.value) for record in consumer]
    consumer.close()
    assert values == list(range(20))
