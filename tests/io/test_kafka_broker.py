"""The provisioned broker is a real Kafka: kafka-python 3 produces and consumes through it."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streamdet.config import KafkaConfig
from streamdet.io.sources import kafka as kafka_source
from streamdet.io.sources.kafka import KafkaSource

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


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_the_daemons_source_reads_topics_compressed_with_every_codec(
    kafka_bootstrap, new_topic, codec
):
    """Producers commonly compress with lz4 or zstd: a batch the consumer cannot decode
    used to wedge the whole daemon (treated as a broker outage)."""
    topic = new_topic(f"codec-{codec}")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type=codec)
    for i in range(50):
        producer.send(topic, key=b"s", value=f'{{"sensor": "s", "ts": {i}, "value": {i}}}'.encode())
    producer.flush()
    producer.close()
    source = KafkaSource(
        KafkaConfig(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}"), [topic]
    )
    try:
        messages: list = []
        deadline = time.time() + 60
        while len(messages) < 50 and time.time() < deadline:
            messages += source.poll(500)
        assert source.connected()
    finally:
        source.close()
    assert [m.offset for m in messages] == list(range(50))
    assert json.loads(messages[-1].value)["value"] == 49


@pytest.mark.parametrize("as_released", [True, False], ids=["streamdet", "kafka-python-alone"])
def test_a_partition_paused_with_records_in_hand_reads_on_after_resume(
    kafka_bootstrap, new_topic, monkeypatch, as_released
):
    """kafka-python keeps a paused partition's fetched records and, past its first drained
    batch, never hands them back nor fetches the partition again: a partition held for its
    replay point or paused by back-pressure stopped for good (the hour-long chaos soak).
    With kafka-python's behaviour alone the partition stays unread, and ``stalled`` (the
    metric, the log line, ``/healthz``) reports it."""
    if not as_released:
        monkeypatch.setattr(kafka_source, "release_parked_records", lambda consumer: None)
    topic = new_topic("pause-resume", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)

    def produce(partition: int, count: int) -> None:
        for i in range(count):
            producer.send(topic, value=b"%d" % i, partition=partition)
        producer.flush()

    produce(0, 200)
    produce(1, 200)
    source = KafkaSource(
        KafkaConfig(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}"),
        [topic],
        max_poll_records=10,
    )
    offsets: dict[int, list[int]] = {0: [], 1: []}
    stalled: dict = {}

    def read_until(done, seconds: float = 60) -> None:
        nonlocal stalled
        deadline = time.time() + seconds
        while not done() and time.time() < deadline:
            for message in source.poll(200):
                offsets[message.partition].append(message.offset)
            source.lag()
            stalled = source.stalled()

    try:
        read_until(lambda: 0 < len(offsets[0]) < 200)  # partition 0's fetch is in hand
        source.pause({(topic, 0)})
        read_until(lambda: len(offsets[1]) == 200)
        produce(1, 50)  # another partition's records pass through while 0 is paused
        read_until(lambda: len(offsets[1]) == 250)
        held = len(offsets[0])
        source.resume({(topic, 0)})
        if as_released:
            read_until(lambda: len(offsets[0]) == 200)
        else:
            read_until(lambda: stalled.get((topic, 0), 0) > 3, seconds=30)
    finally:
        source.close()
        producer.close()
    assert held < 200
    assert offsets[1] == list(range(250))
    assert stalled[(topic, 1)] == 0
    if as_released:
        assert offsets[0] == list(range(200)), f"stuck at {len(offsets[0])} after resume"
        assert stalled[(topic, 0)] == 0
    else:
        assert offsets[0] == list(range(held)), "kafka-python alone reads on: drop the fix"
        assert stalled[(topic, 0)] > 3


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_alert_reads_back_as_a_cloudevent_with_the_sdk(kafka_bootstrap, new_topic, mode):
    """The daemon's alert sink on a real topic; a subscriber reads each record back with the
    CloudEvents SDK's Kafka binding, in the content mode the config chose."""
    from cloudevents.kafka import KafkaMessage, from_binary, from_structured

    from streamdet.io.sinks.kafka import KafkaAlertSink, make_producer

    topic = new_topic(f"ce-{mode}")
    alert = {
        "alert_id": "0123abcd" * 4,
        "topic": "plant",
        "series": "pump-3",
        "detected_at": "2026-12-02T03:00:00.000Z",
        "score": float("nan"),  # written as null, in either mode
        "severity": 2.5,
    }
    producer = make_producer(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    try:
        assert KafkaAlertSink(producer, topic, cloudevents_mode=mode).deliver([alert]) == [None]
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    (record,) = list(consumer)
    consumer.close()
    message = KafkaMessage(dict(record.headers), record.key, record.value)
    if mode == "binary":
        event = from_binary(message, data_unmarshaller=json.loads)
        assert dict(record.headers)["ce_specversion"] == b"1.0"
    else:
        event = from_structured(message)
        assert not any(name.startswith("ce_") for name, _ in record.headers)
    assert (event["id"], event["type"], event["source"]) == (
        alert["alert_id"],
        "io.streamdet.alert.v1",
        "streamdet/plant",
    )
    assert record.key == b"pump-3"
    assert event.data["severity"] == 2.5 and event.data["score"] is None
