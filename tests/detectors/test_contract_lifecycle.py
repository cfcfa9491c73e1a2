"""The contract's last part, for every registered detector a topic can configure: the daemon's
lifecycle trains it into a serving bundle and retrains it, the candidate judged in shadow by
the topic's own threshold rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamdet.app import n_features
from streamdet.config import TopicConfig
from streamdet.detectors import DETECTORS
from streamdet.serving.lifecycle import ModelLifecycle
from tests.detectors.test_contract import CASES

CONFIGURABLE = [(name, case) for name, case in CASES if case.configurable]


def topic_for(name: str, case, folder: Path) -> tuple[TopicConfig, np.ndarray]:
    """A topic whose detector is this case (as a user would configure it), and a series of
    its events: windows unrolled into (T, F) rows, or one row per row or image."""
    kind = DETECTORS[name].kinds[0]
    instances = case.instances
    if kind == "timeseries":
        series = instances.reshape(-1, instances.shape[-1])
        fmt = {"value_fields": [f"f{k}" for k in range(instances.shape[-1])]}
        window = {"seq_len": instances.shape[1]}
    else:
        series = instances.reshape(len(instances), -1)
        fmt = (
            {"image_shape": list(instances.shape[1:])}
            if kind == "image"
            else {"value_fields": [f"f{k}" for k in range(instances.shape[-1])]}
        )
        window = {}
    topic = TopicConfig.model_validate(
        {
            "name": "contract",
            "kind": kind,
            "format": fmt,
            "window": window,
            "detector": {"name": name, "params": case.params_for_topic(folder)},
            "retrain": {"every_events": 100, "holdout": 0.25},
        }
    )
    return topic, series.astype(np.float32)


@pytest.mark.parametrize(
    ("name", "case"), CONFIGURABLE, ids=[f"{n}-{c.label}" for n, c in CONFIGURABLE]
)
def test_a_topic_trains_serves_and_retrains_the_detector(tmp_path, name, case):
    """The daemon's lifecycle on this detector: a bootstrap training saved as a serving
    bundle, then a retraining judged in shadow by the topic's own threshold rule (for
    every detector, whatever its flag is called)."""
    topic, series = topic_for(name, case, tmp_path)
    said: list[str] = []
    lifecycle = ModelLifecycle(topic, tmp_path / "store", n_features(topic), said.append)
    bundle = lifecycle.train({"s": series})
    assert lifecycle.ready and bundle.version == "v000001"
    assert bundle.calibration.pooled is not None and len(bundle.calibration.pooled) > 0
    outcome = lifecycle.retrain({"s": [series]}, reason="contract")
    assert outcome in ("promoted", "rejected"), said[-3:]
    assert lifecycle.outcomes["failed"] == 0
    assert lifecycle.store.versions() == ["v000001", "v000002"]
