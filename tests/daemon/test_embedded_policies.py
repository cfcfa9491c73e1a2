"""The embedded daemon with other threshold rules and with series at very different scales
(the daemon's own Application on its simulator, in process)."""

from __future__ import annotations

import math

import jsonschema
import pytest
import yaml

from streamdet.detectors import load_detector
from streamdet.io.sources.simulator import SensorSimulator
from streamdet.serving.bundle import bundle_summary
from streamdet.serving.store import ModelStore
from tests.daemon.test_embedded import caught_and_false, read_alerts, run_daemon, simulator_config
from tests.daemon_helpers import ALERT_SCHEMA


def test_label_free_policies_catch_every_injected_anomaly_with_few_false_alarms(tmp_path):
    """``threshold.policy`` spot, dspot and dynamic in the daemon: 4,000 simulated steps per
    sensor, the four injected anomalies caught and at most the false alarms the risk allows
    (16,000 windows at 1e-4: 1.6 expected). The first run trains
    the model; the others load it from the store, so they differ only in the policy."""
    sim = SensorSimulator(4, 96, 0.05, 700, 7, first_anomaly=1500)
    expected = sim.injected(up_to_step=4000)
    assert len(expected) == 4
    for policy in ("spot", "dspot", "dynamic"):
        run_daemon(
            simulator_config(
                tmp_path / f"{policy}.yaml",
                threshold={"policy": policy, "risk": 1e-4},
                simulator={"rate": 4000, "sensors": 4, "max_events": 16000},
                alerts_file=f"{policy}.jsonl",
            )
        )
        alerts = read_alerts(tmp_path / f"{policy}.jsonl")
        found = [
            [
                a
                for a in alerts
                if a["series"] == x.sensor
                and x.start_step <= a["window_end_offset"] // 4 < x.end_step + 32
            ]
            for x in expected
        ]
        assert all(found), (
            f"{policy} missed {[x for x, f in zip(expected, found, strict=True) if not f]}"
        )
        false_alarms = len(alerts) - sum(len(f) for f in found)
        assert false_alarms <= 2, f"{policy}: {alerts}"
        assert all(a["threshold"] is not None for a in alerts)


def test_series_seven_orders_of_magnitude_apart_share_one_model(tmp_path):
    """``window.normalise: per_series``: sensors scaled by 1e-3, 1, 1e2 and 1e4 on one topic
    catch their injected anomalies with the recall of a topic holding one series."""
    recalls = {}
    for name, sensors, scales in (("one", 1, None), ("mixed", 4, [1e-3, 1.0, 1e2, 1e4])):
        run_daemon(
            simulator_config(
                tmp_path / f"{name}.yaml",
                threshold={"policy": "spot", "risk": 1e-4},
                simulator={
                    "rate": 4000,
                    "sensors": sensors,
                    "max_events": 4000 * sensors,
                    "scales": scales,
                },
                alerts_file=f"{name}.jsonl",
                models={"store": f"models_{name}"},
                window={"seq_len": 32, "normalise": "per_series"},
            )
        )
        sim = SensorSimulator(sensors, 96, 0.05, 700, 7, first_anomaly=1500)
        recall, false_alarms = caught_and_false(
            read_alerts(tmp_path / f"{name}.jsonl"), sim, 4000, sensors
        )
        assert false_alarms <= 2, (name, false_alarms)
        recalls[name] = recall
    assert recalls["mixed"] >= recalls["one"] == 1.0, recalls
    store = ModelStore(tmp_path / "models_mixed" / "sensors")
    scaling = bundle_summary(store.path_of(store.current()))["series_scaling"]
    assert scaling["sensor-3"][0][0] / scaling["sensor-0"][0][0] == pytest.approx(1e7, rel=0.2)


def test_an_ensemble_topic_explains_each_alert_by_its_members_and_their_trust(tmp_path):
    """``detector: ensemble`` of two classical members at two scales in the daemon: the
    injected anomalies are caught, and every alert names each member's tail probability and
    the weight it was given, as the saved model learnt them (``trust: held_out``; weights sum
    to 1), and the
    smallest probability / weight gives the alert's score."""
    members = [{"name": "pca"}, {"name": "iforest", "pool": 4}]
    config = simulator_config(
        tmp_path / "ensemble.yaml",
        threshold={"policy": "spot", "risk": 1e-4},
        simulator={"rate": 4000, "sensors": 4, "max_events": 16000},
        alerts_file="ensemble.jsonl",
    )
    text = config.read_text().replace("name: seq2seq", "name: ensemble")
    config.write_text(text)
    topic = yaml.safe_load(text)
    topic["topics"][0]["detector"]["params"] = {"members": members, "trust": "held_out"}
    config.write_text(yaml.safe_dump(topic))
    run_daemon(config)
    alerts = read_alerts(tmp_path / "ensemble.jsonl")
    sim = SensorSimulator(4, 96, 0.05, 700, 7, first_anomaly=1500)
    recall, false_alarms = caught_and_false(alerts, sim, 4000, 4)
    assert recall == 1.0 and false_alarms <= 4, alerts
    store = ModelStore(tmp_path / "models" / "sensors")
    learnt = load_detector(store.path_of(store.current())).weights.tolist()
    assert len(learnt) == 2
    for alert in alerts:
        jsonschema.validate(alert, ALERT_SCHEMA)
        named = alert["explanation"]["members"]
        assert [m["detector"] for m in named] == ["pca", "iforest"]
        assert [m["weight"] for m in named] == learnt
        assert sum(m["weight"] for m in named) == pytest.approx(1.0)
        deciding = min(1.0, min(m["probability"] / m["weight"] for m in named))
        assert alert["score"] == pytest.approx(-math.log10(deciding), rel=1e-6, abs=1e-9)
