"""Warm-up rules of a topic's model (pure logic: no training is started here)."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.config import TopicConfig
from streamdet.pipeline.models import TopicModel


def topic_model(tmp_path, warmup: int = 10) -> TopicModel:
    topic = TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 2},
            "detector": {"name": "seq2seq", "warmup_events": warmup},
        }
    )
    model = TopicModel(topic, tmp_path, 1, progress=lambda m: None)
    model._train = lambda data: setattr(model, "trained_on", data)  # record, don't train
    return model


def start(model: TopicModel) -> None:
    if model._thread is not None:
        model._thread.join()


def test_warmup_keeps_exactly_the_first_events_of_each_series(tmp_path):
    model = topic_model(tmp_path)
    for step in range(25):  # series a runs ahead while the partition of b is not seen yet
        model.offer("a", np.array([step], np.float32), all_partitions_seen=False)
    assert model.state == "warming"
    for step in range(10):
        model.offer("b", np.array([100 + step], np.float32), all_partitions_seen=True)
    start(model)
    assert model.state == "training"
    assert model.trained_on["a"][:, 0].tolist() == list(range(10))
    assert model.trained_on["b"][:, 0].tolist() == list(range(100, 110))


def test_a_sparse_series_cannot_stall_training(tmp_path):
    model = topic_model(tmp_path)
    model.offer("sparse", np.array([0.0], np.float32))
    for step in range(29):
        model.offer("busy", np.array([step], np.float32))
    assert model.state == "warming"
    model.offer("busy", np.array([29.0], np.float32))  # 30 = three warm-ups' worth
    start(model)
    assert model.state == "training"
    assert len(model.trained_on["busy"]) == 10 and len(model.trained_on["sparse"]) == 1


def test_threshold_margin_raises_the_inferred_threshold(tmp_path):
    series = {"a": np.sin(np.arange(300, dtype=np.float32) / 5)[:, None]}
    thresholds = []
    for margin in (0, 50):
        topic = TopicConfig.model_validate(
            {
                "name": "t",
                "window": {"seq_len": 8},
                "detector": {
                    "name": "seq2seq",
                    "params": {"latent_dim": 4, "epochs": 1, "seed": 0},
                },
                "threshold": {"threshold_perc": 100, "margin_perc": margin},
            }
        )
        model = TopicModel(topic, tmp_path / str(margin), 1, progress=lambda m: None)
        thresholds.append(model.train(series).threshold)
    assert thresholds[1] == pytest.approx(thresholds[0] + 0.5 * abs(thresholds[0]))
