"""An Avro topic through the daemon on a real broker and a real schema registry (with basic
auth): a model trained from the topic by `streamdet train --from-kafka`, anomalies alert,
hostile records go to the dead-letter topic with their reason, and
while the registry hangs, records with a new schema wait (no dead letter, nothing skipped)
and are scored once it answers."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common.serde import SchemaId
from kafka import KafkaProducer

from streamdet.config import SchemaRegistryConfig
from streamdet.io.schema_registry import SchemaRegistry
from streamdet.io.sources.simulator import SensorSimulator
from tests.conftest import REGISTRY_PASSWORD, REGISTRY_USER, _load_script
from tests.daemon.test_kafka import caught
from tests.daemon_helpers import AlertReader, dead_letters, start_daemon, stop_daemon
from tests.helpers import free_port, run_cli, write_daemon_config
from tests.io.test_schema_registry import READING_V1 as READING

pytestmark = pytest.mark.kafka

# The producers' next release adds a field (with a default: a compatible change).
READING_V2 = {**READING, "fields": [*READING["fields"], {"name": "site", "type": "string"}]}


def metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def wait_for_metric(port: int, line: str, daemon, log: Path, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        assert daemon.poll() is None, log.read_text()[-3000:]
        body = metrics(port)
        if line in body:
            return body
        time.sleep(0.3)
    registry_lines = [x for x in body.splitlines() if "schema" in x]
    raise AssertionError(f"no {line!r} on /metrics: {registry_lines}\n{log.read_text()[-3000:]}")


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A registry of this test's own (it freezes it: no other test may share it)."""
    local_registry = _load_script("local_registry")
    run_dir = tmp_path / "registry"
    url = local_registry.start(run_dir, REGISTRY_USER, REGISTRY_PASSWORD)
    try:
        yield {
            "url": url,
            "username": REGISTRY_USER,
            "password": REGISTRY_PASSWORD,
            "run_dir": str(run_dir),
        }
    finally:
        local_registry.stop(run_dir)


def test_avro_topic_alerts_dead_letters_and_waits_out_a_hanging_registry(
    kafka_bootstrap, new_topic, own_registry, tmp_path
):
    schema_registry = own_registry
    readings, alerts_topic, dlq_topic = new_topic("avro"), new_topic("alerts"), new_topic("dlq")
    registry_section = {
        "url": schema_registry["url"],
        "username": schema_registry["username"],
        "password": schema_registry["password"],
        "timeout_s": 1.0,
    }
    port = free_port()
    config = write_daemon_config(
        tmp_path,
        kafka_bootstrap,
        {
            "name": readings,
            "format": {"encoding": "avro"},
            "window": {"seq_len": 32},
            "detector": {
                "name": "seq2seq",
                "params": {"latent_dim": 16, "epochs": 10},
                "warmup_events": 800,
            },
            "threshold": {"threshold_perc": 100, "margin_perc": 10},
        },
        alerts_topic,
        dlq_topic,
        port,
        cooldown_s=3600,
        schema_registry=registry_section,
    )
    client = SchemaRegistry(SchemaRegistryConfig(**registry_section))
    v1 = client.client.register_schema(f"{readings}-value", Schema(json.dumps(READING), "AVRO"))
    parsed = {v1: fastavro.parse_schema(READING)}
    sim = SensorSimulator(4, 96, 0.05, 700, 7, first_anomaly=1500)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)

    def record(schema_id: int, **fields: object) -> bytes:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed[schema_id], fields)
        return SchemaId("AVRO", schema_id).id_to_bytes() + body.getvalue()

    def produce(n_events: int, schema_id: int, **extra: object) -> None:
        for _ in range(n_events):
            event = sim.next_event()
            fields = {"sensor": event["sensor"], "ts": event["ts"], "value": event["value"]}
            producer.send(readings, value=record(schema_id, **fields, **extra))
        producer.flush()

    produce(4 * 2000, v1)  # warm-up and the spike at step 1500
    good = record(v1, sensor="sensor-0", ts=sim.first_ms, value=1.0)
    hostile = {
        SchemaId("AVRO", 4_000_000).id_to_bytes() + good[5:]: "unknown_schema",
        good[:-4]: "undecodable_record",
        b'{"sensor": "sensor-0", "ts": 1, "value": 1.0}': "undecodable_record",
    }
    for raw in hostile:
        producer.send(readings, key=b"sensor-0", value=raw).get(timeout=30)
    expected = sim.injected(up_to_step=2800)
    # The model is trained from the Avro topic by the command line, as an operator would.
    trained = run_cli(
        "train", "--config", str(config), "--topic", readings, "--from-kafka",
        "--max-events", "800",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "800 events read" in trained.stderr

    reader = AlertReader(kafka_bootstrap, alerts_topic)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    registry_pid = int((Path(schema_registry["run_dir"]) / "registry.pid").read_text())
    try:
        reader.wait_for(lambda alerts: caught(alerts, expected[0]), 240, daemon, log)
        wait_for_metric(port, "streamdet_schema_registry_up 1.0", daemon, log)

        # The producers move to v2 while the registry hangs: the daemon has never seen v2's
        # id, so the first v2 record waits, and every record behind it.
        v2 = client.client.register_schema(
            f"{readings}-value", Schema(json.dumps(READING_V2), "AVRO")
        )
        parsed[v2] = fastavro.parse_schema(READING_V2)
        os.kill(registry_pid, signal.SIGSTOP)
        try:
            produce(4 * 800, v2, site="north")  # steps 2000..2799: the level shift at 2200
            body = wait_for_metric(port, "streamdet_schema_registry_up 0.0", daemon, log)
            waiting = f'streamdet_messages_waiting_for_schema{{topic="{readings}"}}'
            assert f"{waiting} 0.0" not in body
            with pytest.raises(urllib.error.HTTPError) as not_ready:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert b"schema registry" in not_ready.value.read()
            assert not caught(reader.alerts, expected[1])
        finally:
            os.kill(registry_pid, signal.SIGCONT)
        reader.wait_for(lambda alerts: caught(alerts, expected[1]), 240, daemon, log)
        body = wait_for_metric(port, "streamdet_schema_registry_up 1.0", daemon, log)
        assert f"{waiting} 0.0" in body
        for reason in set(hostile.values()):
            line = f'streamdet_invalid_events_total{{reason="{reason}",topic="{readings}"}}'
            assert line in body
        stop_daemon(daemon)
    finally:
        os.kill(registry_pid, signal.SIGCONT)
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
        producer.close()
    # Only the hostile records were dead-lettered: none for the registry's hang.
    assert dead_letters(kafka_bootstrap, dlq_topic) == hostile
    assert "loaded model" in log.read_text()  # the one the command trained
    assert "the schema registry answers; consuming again" in log.read_text()
