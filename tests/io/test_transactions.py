"""Exactly-once alerts against a real broker: what a transaction commits is what a
read_committed subscriber sees, with the offsets; an aborted one is never seen; a member
whose transactional id another process took stops with an error naming the setting."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from streamdet.config import KafkaConfig
from streamdet.core.records import Message, Position
from streamdet.io.sinks.kafka import KafkaAlertSink, make_producer
from streamdet.io.sources.kafka import KafkaSource
from streamdet.io.transactions import (
    KafkaTransaction,
    TransactionRefused,
    TransactionStalled,
)
from streamdet.runtime.checkpoint import Checkpoint
from streamdet.runtime.outbox import Outbox

pytestmark = pytest.mark.kafka


def alert(alert_id: str) -> dict:
    return {
        "alert_id": alert_id,
        "topic": "plant",
        "series": "pump-0",
        "detected_at": "2026-12-02T03:00:00.000Z",
    }


def committed_values(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=2000,
    )
    values: list[bytes] = []
    deadline = time.time() + 30
    while len(values) < expected and time.time() < deadline:
        values.extend(record.value for record in consumer)
    consumer.close()
    return values


def test_transactions_carry_alerts_and_offsets_together_and_fence_a_stale_member(
    kafka_bootstrap, new_topic
):
    data, alerts = new_topic("tx-data"), new_topic("tx-alerts")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(3):
        producer.send(data, b"%d" % n)
    producer.close()
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, group_id=f"g-{data}")
    source = KafkaSource(config, [data])
    messages: list[Message] = []
    deadline = time.time() + 60
    while len(messages) < 3 and time.time() < deadline:
        messages.extend(source.poll(500))
    assert len(messages) == 3
    tx_producer = make_producer(config, transactional_id=f"tx-{data}")
    outbox = Outbox([KafkaAlertSink(tx_producer, alerts)], [])
    transaction = KafkaTransaction(tx_producer, source)
    checkpoint = Checkpoint(source, outbox, [], interval_s=0, transaction=transaction)
    window = type("W", (), {"key": (data, 0), "start_offset": 0, "end_offset": 0})()
    try:
        checkpoint.consumed(messages[0])
        outbox.add_alert(alert("first"), window)
        assert checkpoint.commit(now=1.0) and outbox.delivered["alert"] == 1
        # A transaction aborted (a failed commit, a crash) is never seen by the subscriber.
        transaction.begin()
        tx_producer.send(alerts, json.dumps({"alert_id": "aborted"}).encode()).get(10)
        transaction.abort()
        # Another process takes the same transactional id: this one is fenced for good.
        usurper = make_producer(config, transactional_id=f"tx-{data}")
        KafkaTransaction(usurper, source)
        checkpoint.consumed(messages[1])
        outbox.add_alert(alert("second"), window)
        with pytest.raises(TransactionRefused, match=r"alerts\.transactional_id"):
            checkpoint.commit(now=2.0)
        usurper.close(timeout=5)
    finally:
        tx_producer.close(timeout=5)
        source.close()
    assert [json.loads(v)["alert_id"] for v in committed_values(kafka_bootstrap, alerts, 1)] == [
        "first"
    ]
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{data}")
    committed = reader.committed(TopicPartition(data, 0), metadata=True)
    reader.close()
    assert committed.offset == 1  # the offsets of the committed transaction, not the fenced one
    assert json.loads(committed.metadata)["scored_through"] == 0


class StuckProducer:
    """A transactional producer whose offset request is never answered (seen after a broker
    restart: kafka-python then waits for ever)."""

    def __init__(self, stuck: bool) -> None:
        self.stuck = stuck
        self.calls: list[str] = []
        self.closed = False

    def init_transactions(self) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets, metadata) -> None:
        self.calls.append("offsets")
        if self.stuck:
            threading.Event().wait()

    def commit_transaction(self) -> None:
        self.calls.append("commit")

    def abort_transaction(self) -> None:
        self.calls.append("abort")

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class Offsets:
    def transaction_offsets(self, positions):
        return positions

    def group_metadata(self):
        return "member"


def test_a_stuck_transactional_call_is_given_up_and_the_producer_replaced():
    stuck, fresh = StuckProducer(stuck=True), StuckProducer(stuck=False)
    sink = type("Sink", (), {"producer": stuck})()
    transaction = KafkaTransaction(
        stuck, Offsets(), remake=lambda: fresh, sinks=[sink], timeout_s=0.2
    )
    position = {("t", 0): Position(0, 4, 5)}
    with pytest.raises(TransactionStalled):
        transaction.commit(position)
    transaction.abort()  # nothing to ask the stuck producer
    assert stuck.calls == ["init", "begin", "offsets"]
    transaction.commit(position)  # a new producer, same transactional id, fences the old
    assert sink.producer is fresh and fresh.calls == ["init", "begin", "offsets", "commit"]
    assert transaction.replaced == 1
    deadline = time.time() + 5
    while not stuck.closed and time.time() < deadline:
        time.sleep(0.05)
    assert stuck.closed


class AnswerLost:
    """A real transactional producer whose commit's answer never comes back (a broker
    restart between the commit and its answer, as the chaos soak saw): with ``commits`` it
    commits and then waits for ever, without it it only waits."""

    def __init__(self, producer: KafkaProducer, commits: bool) -> None:
        self.producer, self.commits = producer, commits

    def __getattr__(self, name: str):
        return getattr(self.producer, name)

    def commit_transaction(self) -> None:
        if self.commits:
            self.producer.commit_transaction()
        threading.Event().wait()


def poll_until(source: KafkaSource, wanted: int) -> list[Message]:
    messages: list[Message] = []
    deadline = time.time() + 60
    while len(messages) < wanted and time.time() < deadline:
        messages.extend(source.poll(500))
    return messages


@pytest.mark.parametrize("went_through", [True, False], ids=["went_through", "did_not"])
def test_a_commit_whose_answer_never_came_is_resolved_before_its_alerts_go_out_again(
    kafka_bootstrap, new_topic, went_through
):
    """Once the broker answers, the member learns from the group's committed offsets whether
    the unanswered commit went through: its alert is then read exactly once either way
    (if it did not, the partition is read again from its last commit and the alert raised
    again from there; before, the outbox always sent it again)."""
    data, alerts = new_topic("doubt-data"), new_topic("doubt-alerts")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(data, b"0").get(10)
    producer.close()
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, group_id=f"g-{data}")
    source = KafkaSource(config, [data])
    messages = poll_until(source, 1)
    tx_id = f"tx-{data}"
    first = make_producer(config, transactional_id=tx_id)
    sink = KafkaAlertSink(AnswerLost(first, commits=went_through), alerts)
    replacements: list[KafkaProducer] = []

    def remake() -> KafkaProducer:
        replacements.append(make_producer(config, transactional_id=tx_id))
        return replacements[-1]

    transaction = KafkaTransaction(sink.producer, source, remake, [sink], timeout_s=3)
    outbox = Outbox([sink], [])
    checkpoint = Checkpoint(source, outbox, [], interval_s=0, transaction=transaction)
    window = type("W", (), {"key": (data, 0), "start_offset": 0, "end_offset": 0})()
    try:
        checkpoint.consumed(messages[0])
        outbox.add_alert(alert("in-doubt"), window)
        assert not checkpoint.commit(now=1.0)  # no answer within 3 s
        assert transaction.in_doubt and outbox.delivered["alert"] == 0
        assert checkpoint.commit(now=10.0)  # resolved, then a commit of its own
        assert not transaction.in_doubt
        if went_through:
            assert outbox.delivered["alert"] == 1 and checkpoint.rewinds == 0
        else:
            assert outbox.delivered["alert"] == 0 and checkpoint.rewinds == 1
            again = poll_until(source, 1)  # offset 0 read again: nothing was committed
            assert [m.offset for m in again] == [0]
            checkpoint.consumed(again[0])
            outbox.add_alert(alert("in-doubt"), window)
            assert checkpoint.commit(now=20.0) and outbox.delivered["alert"] == 1
    finally:
        for made in replacements:
            made.close(timeout=5)
        source.close()
    values = committed_values(kafka_bootstrap, alerts, 1)  # all of them: read until idle
    assert [json.loads(v)["alert_id"] for v in values] == ["in-doubt"]
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{data}")
    assert reader.committed(TopicPartition(data, 0)) == 1
    reader.close()


def test_a_partition_lost_inside_a_transaction_is_read_again_and_its_alert_committed_once(
    kafka_bootstrap, new_topic
):
    """The group took a partition back (a session that expired in a broker outage) while
    the open transaction held its alert: the transaction is aborted and the partition read
    again from its last commit, here by the same member once it is handed back (the case
    where dropping the alert alone lost it, chaos soak of session 14). The subscriber reads
    the alert raised again once, and the offsets of the first commit stay the replay point."""
    data, alerts = new_topic("lost-data"), new_topic("lost-alerts")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(4):
        producer.send(data, b"%d" % n).get(10)
    producer.close()
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, group_id=f"g-{data}")
    source = KafkaSource(config, [data])
    tx_producer = make_producer(config, transactional_id=f"tx-{data}")
    outbox = Outbox([KafkaAlertSink(tx_producer, alerts)], [])
    checkpoint = Checkpoint(
        source, outbox, [], interval_s=0, transaction=KafkaTransaction(tx_producer, source)
    )
    key = (data, 0)
    try:
        messages = poll_until(source, 4)
        for message in messages[:2]:
            checkpoint.consumed(message)
        assert checkpoint.commit(now=1.0)  # offsets 0-1 committed, no alert
        for message in messages[2:]:
            checkpoint.consumed(message)
        window = type("W", (), {"key": key, "start_offset": 2, "end_offset": 3})()
        outbox.add_alert(alert("lost"), window)
        checkpoint.transaction.begin()
        outbox.flush(now=2.0)  # inside the open transaction, not committed yet
        assert outbox.staged
        checkpoint.revoke({key})  # what the daemon does when kafka-python reports it lost
        assert checkpoint.rewinds == 1 and len(outbox) == 0 and not outbox.staged
        again = poll_until(source, 2)
        assert [m.offset for m in again] == [2, 3]
        for message in again:
            checkpoint.consumed(message)
        outbox.add_alert(alert("lost"), window)
        assert checkpoint.commit(now=3.0) and outbox.delivered["alert"] == 1
    finally:
        tx_producer.close(timeout=5)
        source.close()
    values = committed_values(kafka_bootstrap, alerts, 1)
    assert [json.loads(v)["alert_id"] for v in values] == ["lost"]
