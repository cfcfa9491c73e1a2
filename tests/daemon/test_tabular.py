"""Tabular topics through the daemon on a real broker: planted outliers alert, bad rows go to
the dead-letter topic with their reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kafka import KafkaProducer

from streamdet.config import load_config_text
from streamdet.core.errors import ConfigError
from tests.daemon_helpers import alerts_until_planted_are_flagged, dead_letters
from tests.detectors import test_adversarial_vae as adversarial_rows
from tests.detectors.test_adversarial_vae import attack_rows, manifold_rows, vulnerable_classifier
from tests.helpers import free_port, write_daemon_config

FEATURES = [f"f{i}" for i in range(6)]
BASIS = np.random.default_rng(99).normal(size=(2, 6))


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) @ BASIS + 0.05 * rng.normal(size=(n, 6))


def test_tabular_kind_accepts_only_tabular_detectors():
    allowed = "allowed for kind tabular: adversarial_vae, ensemble, iforest, pca, vaegmm"
    with pytest.raises(ConfigError, match=allowed):
        load_config_text(
            "topics: [{name: t, kind: tabular, detector: {name: seq2seq}}]", environ={}
        )


@pytest.mark.kafka
def test_tabular_topic_alerts_on_planted_outliers_and_dead_letters_bad_rows(
    kafka_bootstrap, new_topic, tmp_path
):
    topic, alerts_topic, dlq_topic = new_topic("rows"), new_topic("alerts"), new_topic("dlq")
    config = write_daemon_config(
        tmp_path,
        kafka_bootstrap,
        {
            "name": topic,
            "kind": "tabular",
            "format": {"series_key": "machine", "timestamp_field": None, "value_fields": FEATURES},
            "detector": {
                "name": "vaegmm",
                "warmup_events": 500,
                "params": {"epochs": 60, "batch_size": 64, "samples": 3, "seed": 0},
            },
            "threshold": {"threshold_perc": 99.5},
        },
        alerts_topic,
        dlq_topic,
        free_port(),
    )
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(values: np.ndarray, machine: str) -> int:
        features = {f: round(float(v), 5) for f, v in zip(FEATURES, values, strict=True)}
        body = {"machine": machine, **features}
        return producer.send(topic, value=json.dumps(body).encode()).get(timeout=30).offset

    for i, row in enumerate(rows(1500, 1)):  # warm-up: 500 per machine
        send(row, f"m{i % 3}")
    planted = []
    test_rows = rows(600, 2)
    outliers = 3 * np.random.default_rng(3).normal(size=(10, 6))
    for i, row in enumerate(test_rows):
        send(row, f"m{i % 3}")
        if i % 60 == 30:
            planted.append(send(outliers[len(planted)], "m0"))
    bad = {
        json.dumps({"machine": "m0", **{f: 1.0 for f in FEATURES[:-1]}}).encode(): "missing_field",
        json.dumps({"machine": "m0", **{f: "x" for f in FEATURES}}).encode(): "wrong_type",
        b'{"machine": "m1", "f0": NaN, "f1": 1, "f2": 1, "f3": 1, "f4": 1, "f5": 1}': "non_finite",
        b"\x00\x01binary": "undecodable_json",
    }
    for raw in bad:
        producer.send(topic, value=raw).get(timeout=30)
    producer.close()

    alerts = alerts_until_planted_are_flagged(config, kafka_bootstrap, alerts_topic, planted)
    flagged = {a["window_end_offset"] for a in alerts}
    false_alarms = flagged - set(planted)
    assert len(false_alarms) <= 0.03 * len(test_rows), sorted(false_alarms)
    first = alerts[0]
    assert first["detector"] == "vaegmm" and len(first["feature_scores"]) == 6

    letters = dead_letters(kafka_bootstrap, dlq_topic)
    assert letters == bad


@pytest.mark.kafka
def test_tabular_topic_with_adversarial_vae_alerts_on_attacked_rows(
    kafka_bootstrap, new_topic, tmp_path
):
    topic, alerts_topic, dlq_topic = new_topic("scored"), new_topic("alerts"), new_topic("dlq")
    classifier = vulnerable_classifier(tmp_path / "classifier.keras")
    fields = adversarial_rows.FEATURES
    config = write_daemon_config(
        tmp_path,
        kafka_bootstrap,
        {
            "name": topic,
            "kind": "tabular",
            "format": {"series_key": None, "timestamp_field": None, "value_fields": fields},
            "detector": {
                "name": "adversarial_vae",
                "warmup_events": 1500,
                "params": {
                    "classifier": str(tmp_path / "classifier.keras"),
                    "latent_dim": 2,
                    "epochs": 30,
                    "batch_size": 64,
                    "seed": 0,
                },
            },
            "threshold": {"threshold_perc": 99.5},
        },
        alerts_topic,
        dlq_topic,
        free_port(),
    )
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(values: np.ndarray) -> int:
        body = {f: round(float(v), 6) for f, v in zip(fields, values, strict=True)}
        return producer.send(topic, value=json.dumps(body).encode()).get(timeout=30).offset

    for row in manifold_rows(1500, 1)[0]:
        send(row)
    clean, labels = manifold_rows(400, 2)
    attacked = attack_rows(classifier, clean[:10], labels[:10], eps=0.2)
    planted = []
    for i, row in enumerate(clean):
        send(row)
        if i % 40 == 20:
            planted.append(send(attacked[len(planted)]))
    producer.close()

    alerts = alerts_until_planted_are_flagged(config, kafka_bootstrap, alerts_topic, planted)
    false_alarms = {a["window_end_offset"] for a in alerts} - set(planted)
    assert len(false_alarms) <= 0.03 * len(clean), sorted(false_alarms)
    assert alerts[0]["detector"] == "adversarial_vae"
    assert len(alerts[0]["feature_scores"]) == len(fields)
    assert dead_letters(kafka_bootstrap, dlq_topic) == {}
