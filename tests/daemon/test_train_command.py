"""``streamdet train`` writes a model into the store that the daemon then loads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from streamdet.io.sources.simulator import SensorSimulator
from streamdet.serving.bundle import ServingBundle
from streamdet.serving.store import ModelStore
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def write_config(folder: Path, topic: str, bootstrap: str | None = None) -> Path:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["topics"][0]["name"] = topic
    config["topics"][0]["detector"]["params"] = {"latent_dim": 8, "epochs": 1}
    config["kafka"]["bootstrap_servers"] = bootstrap
    config["models"]["store"] = str(folder / "models")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_train(*args: str) -> subprocess.CompletedProcess:
    return run_cli("train", *args)


def test_train_from_csv_file_and_bad_csv(tmp_path):
    sim = SensorSimulator(2, 96, 0.05, 10**9, 1)
    lines = ["sensor,ts,value"] + [
        f"{e['sensor']},{e['ts']},{e['value']}" for e in (sim.next_event() for _ in range(600))
    ]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path, "plant")
    done = run_train(
        "--config", str(config), "--topic", "plant", "--from-file", str(tmp_path / "data.csv")
    )
    assert done.returncode == 0, done.stderr
    assert "seq2seq epoch 1/1" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["training_events"] == 600
    assert summary["version"] == "v000001"
    store = ModelStore(tmp_path / "models" / "plant")
    bundle = ServingBundle.load(store.path_of(store.current()))
    assert bundle.detector.input_shape == (32, 1) and bundle.training_events == 600
    # Every window of the file scored once: the calibration the threshold rules fit on.
    assert len(bundle.calibration.pooled) == 600 - 2 * 31  # two series of 300 events
    listed = run_cli("models", "list", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)["plant"]] == ["v000001"]

    (tmp_path / "bad.csv").write_text("sensor,ts,reading\ns,1,2\n")
    failed = run_train(
        "--config", str(config), "--topic", "plant", "--from-file", str(tmp_path / "bad.csv")
    )
    assert failed.returncode == 2
    assert "missing column(s) ['value']" in failed.stderr
    wrong = run_train("--config", str(config), "--topic", "nope", "--from-file", "x.csv")
    assert wrong.returncode == 2 and "allowed: plant" in wrong.stderr


@pytest.mark.kafka
def test_train_from_kafka(kafka_bootstrap, new_topic, tmp_path):
    topic = new_topic("train")
    sim = SensorSimulator(2, 96, 0.05, 10**9, 2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for _ in range(700):
        event = sim.next_event()
        producer.send(topic, key=str(event["sensor"]).encode(), value=json.dumps(event).encode())
    producer.send(topic, value=b"not json")
    producer.flush()
    producer.close()
    config = write_config(tmp_path, topic, kafka_bootstrap)
    done = run_train(
        "--config", str(config), "--topic", topic, "--from-kafka", "--max-events", "600"
    )
    assert done.returncode == 0, done.stderr
    assert "600 events read" in done.stderr
    assert ModelStore(tmp_path / "models" / topic).current() == "v000001"
