"""The daemon against a real Kafka broker, run as a subprocess the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streamdet.io.sources.simulator import SensorSimulator
from tests.daemon_helpers import AlertReader, start_daemon, stop_daemon, wait_until_ready
from tests.helpers import free_port, run_cli, write_daemon_config

pytestmark = pytest.mark.kafka

BASE_MS = 1_700_000_000_000
BAD_MESSAGES = {
    b"{not json": "undecodable_json",
    json.dumps({"sensor": "sensor-0", "value": 1.0}).encode(): "missing_field",
    json.dumps({"sensor": "sensor-0", "ts": BASE_MS, "value": "high"}).encode(): "wrong_type",
    b'{"sensor": "sensor-0", "ts": 1700000000000, "value": NaN}': "non_finite",
    json.dumps(
        {"sensor": "sensor-0", "ts": BASE_MS, "value": [1.0, 2.0]}
    ).encode(): "feature_count",
}


def step_of(alert: dict) -> int:
    end = datetime.fromisoformat(alert["window_end"].replace("Z", "+00:00"))
    return int((end.timestamp() * 1000 - BASE_MS) // 60_000)


def caught(alerts: list[dict], anomaly, seq_len: int = 32) -> bool:
    return any(
        a["series"] == anomaly.sensor
        and anomaly.start_step <= step_of(a) < anomaly.end_step + seq_len
        for a in alerts
    )


def test_daemon_on_kafka_alerts_dead_letters_metrics_and_restart(
    kafka_bootstrap, new_topic, tmp_path
):
    sensors_topic = new_topic("sensors", partitions=2)
    alerts_topic = new_topic("alerts")
    dlq_topic = new_topic("dlq")
    port = free_port()
    config = write_daemon_config(
        tmp_path,
        kafka_bootstrap,
        {
            "name": sensors_topic,
            "window": {"seq_len": 32},
            "detector": {
                "name": "seq2seq",
                "params": {"latent_dim": 16, "epochs": 10},
                "warmup_events": 800,
            },
            # As shipped in config.yaml: scores just past the warm-up's maximum stay quiet.
            "threshold": {"threshold_perc": 100, "margin_perc": 10},
        },
        alerts_topic,
        dlq_topic,
        port,
        cooldown_s=3600,
        batching={"commit_interval_ms": 200},
    )
    sim = SensorSimulator(4, 96, 0.05, 700, 7, first_anomaly=1500)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)

    def produce(n_events: int) -> None:
        for _ in range(n_events):
            event = sim.next_event()
            producer.send(
                sensors_topic, key=str(event["sensor"]).encode(), value=json.dumps(event).encode()
            )
        producer.flush()

    produce(4 * 2000)  # steps 0..1999: warm-up and the spike at step 1500
    for raw in BAD_MESSAGES:
        producer.send(sensors_topic, key=b"sensor-0", value=raw).get(timeout=30)
    expected = sim.injected(up_to_step=3200)
    assert [a.kind for a in expected] == ["spike", "level_shift", "drift"]

    reader = AlertReader(kafka_bootstrap, alerts_topic)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(lambda alerts: caught(alerts, expected[0]), 240, daemon, log)

        body = ""
        deadline = time.time() + 20  # the lag gauge is refreshed every 5 s
        while time.time() < deadline and "streamdet_consumer_lag_messages{" not in body:
            url = f"http://127.0.0.1:{port}/metrics"
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            time.sleep(0.5)
        assert f'streamdet_consumer_lag_messages{{partition="0",topic="{sensors_topic}"}}' in body
        for reason in set(BAD_MESSAGES.values()):
            line = f'streamdet_invalid_events_total{{reason="{reason}",topic="{sensors_topic}"}}'
            assert f"{line} 1.0" in body
        assert f'streamdet_events_consumed_total{{topic="{sensors_topic}"}}' in body
        assert "streamdet_series_anomaly_score" in body

        # Mid-stream: the second half arrives while the daemon is being stopped.
        feeder = threading.Thread(target=produce, args=(4 * 1200,))
        feeder.start()
        time.sleep(0.5)
        stop_daemon(daemon)
        feeder.join()

        spike_alerts = [a["alert_id"] for a in reader.alerts if caught([a], expected[0])]
        daemon = start_daemon(config, log)  # loads the saved model, resumes from the commit
        # Ready (model loaded, partitions assigned) before judging: the first run may already
        # have caught everything before its SIGTERM took effect.
        wait_until_ready(port, daemon, log, 120)
        reader.wait_for(lambda alerts: all(caught(alerts, x) for x in expected), 240, daemon, log)
        time.sleep(2)
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
        producer.close()

    assert "loaded model" in log.read_text()
    # Replayed windows rebuild state without alerting twice.
    again = [a["alert_id"] for a in reader.alerts if caught([a], expected[0])]
    assert again == spike_alerts
    # Normal data stays quiet: few alerts outside the injected anomalies.
    false_alarms = [a for a in reader.alerts if not any(caught([a], x) for x in expected)]
    assert len(false_alarms) <= 8, [
        (a["series"], step_of(a), round(a["score"], 3)) for a in false_alarms
    ]
    headers = reader.headers[0]
    assert headers["ce_specversion"] == "1.0" and headers["ce_id"] == reader.alerts[0]["alert_id"]
    # An alert explains itself, and `streamdet explain` draws it from the alert topic.
    spike = next(a for a in reader.alerts if caught([a], expected[0]))
    assert spike["rule"] == "percentile" and spike["severity"] > 1
    assert len(spike["explanation"]["observed"]) == len(spike["explanation"]["expected"])
    picture = tmp_path / "spike.png"
    drawn = run_cli(
        "explain", spike["alert_id"], "--from-kafka", "--config", str(config), "--out", str(picture)
    )
    assert drawn.returncode == 0, drawn.stderr
    assert picture.stat().st_size > 5000

    dlq = KafkaConsumer(
        dlq_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    letters = {record.value: dict(record.headers) for record in dlq}
    dlq.close()
    assert set(letters) == set(BAD_MESSAGES)
    for raw, reason in BAD_MESSAGES.items():
        assert letters[raw]["streamdet_reason"].decode() == reason
        assert letters[raw]["streamdet_source_topic"].decode() == sensors_topic
        assert int(letters[raw]["streamdet_source_offset"]) >= 0


def test_simulate_command_produces_the_labelled_stream(kafka_bootstrap, new_topic):
    topic = new_topic("sim")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamdet.cli",
            "simulate",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            topic,
            "--rate",
            "5000",
            "--max-events",
            "3000",
            "--first-anomaly",
            "300",
            "--anomaly-every",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["events"] == 3000
    assert [a["kind"] for a in summary["injected"]][:2] == ["spike", "level_shift"]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    records = [json.loads(r.value) for r in consumer]
    consumer.close()
    assert len(records) == 3000
    assert {r["sensor"] for r in records} == {f"sensor-{i}" for i in range(4)}


def test_promoting_a_version_swaps_it_in_on_kafka_without_losing_a_window(
    kafka_bootstrap, new_topic, tmp_path
):
    """A daemon consuming Kafka serves v000001; ``streamdet models promote v000002`` makes
    it serve v000002 within seconds (metrics and alerts), and every window is scored once."""
    import numpy as np

    from streamdet.config import load_config
    from streamdet.serving.lifecycle import ModelLifecycle
    from streamdet.serving.store import ModelStore

    sensors_topic = new_topic("reload")
    alerts_topic = new_topic("reload-alerts")
    port = free_port()
    topic = {
        "name": sensors_topic,
        "window": {"seq_len": 32},
        "detector": {"name": "seq2seq", "params": {"latent_dim": 8, "epochs": 3}},
        "threshold": {"policy": "spot", "risk": 1e-3},
    }
    config = write_daemon_config(
        tmp_path,
        kafka_bootstrap,
        topic,
        alerts_topic,
        new_topic("reload-dlq"),
        port,
        cooldown_s=600,
        models={"store": str(tmp_path / "models"), "reload_interval_s": 1},
    )
    # Two stored versions before the daemon starts: v000001 serving, v000002 waiting.
    warmup = SensorSimulator(4, 96, 0.05, 10**9, 3)
    series: dict[str, list[float]] = {}
    for _ in range(4 * 600):
        event = warmup.next_event()
        series.setdefault(str(event["sensor"]), []).append(float(event["value"]))
    arrays = {k: np.asarray(v, np.float32)[:, None] for k, v in series.items()}
    topic_config = load_config(config).topics[0]
    ModelLifecycle(topic_config, tmp_path / "models", 1, lambda m: None).train(arrays)
    store = ModelStore(tmp_path / "models" / sensors_topic)
    with store.writing(promote=False) as (version, folder):
        for path in store.path_of("v000001").iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
        meta = json.loads((folder / "metadata.json").read_text())
        meta["training"]["store_version"] = version
        (folder / "metadata.json").write_text(json.dumps(meta))
    assert store.current() == "v000001" and version == "v000002"

    sim = SensorSimulator(4, 96, 0.05, 250, 7, first_anomaly=300)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    produced = 0

    def produce(steps: int) -> None:
        nonlocal produced
        for _ in range(4 * steps):
            event = sim.next_event()
            producer.send(
                sensors_topic, key=str(event["sensor"]).encode(), value=json.dumps(event).encode()
            )
        producer.flush()
        produced += steps

    def metrics() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    def scored() -> float:
        for line in metrics().splitlines():
            if line.startswith("streamdet_windows_scored_total{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    reader = AlertReader(kafka_bootstrap, alerts_topic)
    log = tmp_path / "daemon.log"
    produce(800)
    daemon = start_daemon(config, log)
    try:
        wait_until_ready(port, daemon, log, 120)
        deadline = time.time() + 15  # model_info is exported by the loop after readiness
        while time.time() < deadline and 'store_version="v000001"' not in metrics():
            time.sleep(0.3)
        assert 'store_version="v000001"' in metrics()
        promoted = run_cli("models", "promote", "v000002", "--config", str(config),
                           "--topic", sensors_topic)  # fmt: skip
        assert promoted.returncode == 0, promoted.stderr
        produce(800)  # traffic keeps flowing across the swap
        deadline = time.time() + 30
        while time.time() < deadline and 'store_version="v000002"' not in metrics():
            time.sleep(0.3)
        body = metrics()
        assert 'store_version="v000002"' in body and 'store_version="v000001"' not in body
        produce(800)
        expected_windows = 4 * (produced - 31)
        deadline = time.time() + 60
        while time.time() < deadline and scored() < expected_windows:
            time.sleep(0.5)
        time.sleep(2)
        assert scored() == expected_windows  # every window once: none lost, none twice
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
        producer.close()
    assert "now serving model v000002 (was v000001)" in log.read_text()
    versions = [a["store_version"] for a in reader.alerts]
    assert "v000002" in versions and versions == sorted(versions), versions
