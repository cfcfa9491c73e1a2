"""Consumer-group and broker faults on a real broker: a member killed with SIGKILL while
another takes over its partitions, and a broker stopped mid-stream for longer than the
consumer's session timeout. Every process stopped here was started here, and is stopped by
its pid."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition

from tests.conftest import _load_local_kafka
from tests.daemon.test_faults import (
    SEQ_LEN,
    caught,
    daemon_config,
    metric,
    produce,
    step_of,
    stream,
    trained_model,
)
from tests.daemon_helpers import AlertReader, start_daemon, stop_daemon, wait_until_ready
from tests.helpers import free_port

pytestmark = pytest.mark.kafka
__all__ = ["trained_model"]  # the module-scoped fixture, shared with test_daemon_faults

SENSORS = tuple(f"pump-{i}" for i in range(8))


OUTAGE_S = 15


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def all_caught(alerts: list[dict], steps: set[int]) -> bool:
    return all(
        caught([a for a in alerts if a["series"] == sensor], step)
        for sensor in SENSORS
        for step in steps
    )


def false_alarms(alerts: list[dict], spikes: set[int]) -> list[tuple[str, int]]:
    return [
        (a["series"], step_of(a))
        for a in alerts
        if not any(s <= step_of(a) < s + SEQ_LEN for s in spikes)
    ]


def test_a_member_killed_hands_its_partitions_to_the_survivor(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    topic = new_topic("group", partitions=4)
    alerts_topic, dlq = new_topic("alerts"), new_topic("dlq")
    early, late = {300}, {600, 800}
    produce(kafka_bootstrap, topic, stream(range(400), early, sensors=SENSORS))
    daemons, logs, ports = [], [], []
    reader = AlertReader(kafka_bootstrap, alerts_topic)
    try:
        for member in ("a", "b"):
            folder = tmp_path / member
            port = free_port()
            config = daemon_config(
                folder, kafka_bootstrap, topic, trained_model, port, alerts=alerts_topic, dlq=dlq
            )
            logs.append(folder / "daemon.log")
            ports.append(port)
            daemons.append(start_daemon(config, logs[-1]))
        reader.wait_for(lambda got: all_caught(got, early), 180, daemons[0], logs[0])
        for port, daemon, log in zip(ports, daemons, logs, strict=True):
            wait_until_ready(port, daemon, log, 90)  # each member owns partitions
        daemons[1].kill()  # SIGKILL: no revoke, no last commit
        daemons[1].wait(10)
        produce(kafka_bootstrap, topic, stream(range(400, 900), late, seed=1, sensors=SENSORS))
        reader.wait_for(lambda got: all_caught(got, early | late), 240, daemons[0], logs[0])
        time.sleep(2)
        status, ready = fetch(f"http://127.0.0.1:{ports[0]}/readyz")
        assert status == 200, ready
        stop_daemon(daemons[0])
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.kill()
        reader.close()
    assert false_alarms(reader.alerts, early | late) == []  # no cold window alerted
    ids = defaultdict(set)
    for alert in reader.alerts:
        ids[(alert["partition"], alert["window_end_offset"])].add(alert["alert_id"])
    assert all(len(v) == 1 for v in ids.values())  # a re-scored window keeps its alert id
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}")
    total = 0
    for partition in range(4):
        committed = consumer.committed(TopicPartition(topic, partition), metadata=True)
        total += json.loads(committed.metadata)["scored_through"] + 1
    consumer.close()
    assert total == 900 * len(SENSORS)  # the survivor scored every partition to its end
    print(
        f"RELIABILITY member killed: {900 * len(SENSORS)} events over 4 partitions, "
        f"{len(early | late) * len(SENSORS)} spike/sensor pairs all alerted, "
        f"{len(reader.alerts)} alerts ({len(reader.alerts) - len(ids)} repeated), 0 lost"
    )


@pytest.fixture
def own_broker(tmp_path: Path):
    """A broker of this test's own, so stopping it disturbs no other test."""
    local_kafka = _load_local_kafka()
    run_dir = tmp_path / "broker"
    bootstrap, _ = local_kafka.start(run_dir)
    try:
        yield local_kafka, run_dir, bootstrap
    finally:
        local_kafka.stop(run_dir)


def test_a_broker_outage_longer_than_the_session_loses_nothing(own_broker, tmp_path, trained_model):
    local_kafka, run_dir, bootstrap = own_broker
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(n, 1, 1) for n in ("sensors", "alerts", "dlq")])
    admin.close()
    before, after = {300}, {600, 800}
    produce(bootstrap, "sensors", stream(range(450), before, sensors=SENSORS))
    folder = tmp_path / "daemon"
    port = free_port()
    config = daemon_config(
        folder, bootstrap, "sensors", trained_model, port, alerts="alerts", dlq="dlq"
    )
    log = folder / "daemon.log"
    reader = AlertReader(bootstrap, "alerts")
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(lambda got: all_caught(got, before), 180, daemon, log)
        local_kafka.stop(run_dir)  # the broker this test started, by its pid
        outage_started = time.time()
        seen_down = False
        # 15 s: past the 10 s session timeout, so the member must rejoin the group after.
        while time.time() - outage_started < OUTAGE_S:
            assert daemon.poll() is None, log.read_text()[-3000:]
            status, body = fetch(f"http://127.0.0.1:{port}/readyz")
            _, metrics = fetch(f"http://127.0.0.1:{port}/metrics")
            if status == 503 and "broker" in body and metric(metrics, "streamdet_broker_up") == 0:
                seen_down = True
            health, _ = fetch(f"http://127.0.0.1:{port}/healthz")
            assert health == 200  # the loop keeps turning
            time.sleep(1)
        assert seen_down
        local_kafka.resume(run_dir)
        produce(bootstrap, "sensors", stream(range(450, 900), after, seed=1, sensors=SENSORS))
        reader.wait_for(lambda got: all_caught(got, before | after), 240, daemon, log)
        deadline = time.time() + 30
        while time.time() < deadline:
            status, _ = fetch(f"http://127.0.0.1:{port}/readyz")
            _, metrics = fetch(f"http://127.0.0.1:{port}/metrics")
            if status == 200 and metric(metrics, "streamdet_broker_up") == 1:
                break
            time.sleep(1)
        assert status == 200 and metric(metrics, "streamdet_broker_up") == 1
        # The member's session expired during the outage: it commits again once it has
        # rejoined the group (after the commit backoff). Wait for that commit, not a delay.
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="g-sensors")
        deadline, scored = time.time() + 90, -1
        while time.time() < deadline and scored < 900 * len(SENSORS) - 1:
            committed = consumer.committed(TopicPartition("sensors", 0), metadata=True)
            scored = json.loads(committed.metadata)["scored_through"] if committed else -1
            time.sleep(1)
        consumer.close()
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    assert false_alarms(reader.alerts, before | after) == []
    assert scored == 900 * len(SENSORS) - 1  # every event scored, and committed as such
    ids = {(a["partition"], a["window_end_offset"]) for a in reader.alerts}
    print(
        f"RELIABILITY broker outage {OUTAGE_S} s: {900 * len(SENSORS)} events, "
        f"{len(before | after) * len(SENSORS)} spike/sensor pairs all alerted, "
        f"{len(reader.alerts)} alerts ({len(reader.alerts) - len(ids)} repeated), 0 lost"
    )


def test_a_broker_whose_port_another_process_took_is_not_reported_up(tmp_path):
    """Another process listening on the chosen port once made a broker that had exited with
    "Address already in use" look started (CI: an outage test then bootstrapped for ever)."""
    import socket

    local_kafka = _load_local_kafka()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(local_kafka.PortTaken):
            local_kafka.start(tmp_path / "broker", port=port)
    assert not (tmp_path / "broker" / "bootstrap").exists()
