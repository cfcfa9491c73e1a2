"""A topic's model lifecycle: warm-up rules, failed trainings and their retries, retraining
triggers and history (pure logic: no model is trained here)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamdet.config import TopicConfig
from streamdet.core.errors import StreamdetError
from streamdet.serving.lifecycle import ModelLifecycle


def topic_model(tmp_path, warmup: int = 10) -> ModelLifecycle:
    topic = TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 2},
            "detector": {"name": "seq2seq", "warmup_events": warmup},
        }
    )
    model = ModelLifecycle(topic, tmp_path, 1, progress=lambda m: None)
    model.train = lambda series: setattr(model, "trained_on", series)  # record, don't train
    return model


def start(model: ModelLifecycle) -> None:
    model.wait()


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


def test_a_failed_training_is_reported_and_retried_with_backoff(tmp_path):
    topic = TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 2},
            "detector": {"name": "seq2seq", "warmup_events": 10, "retry_after_s": 5},
        }
    )
    model = ModelLifecycle(topic, tmp_path, 1, progress=lambda m: None)
    attempts = []

    def flaky(series):
        attempts.append(series)
        if len(attempts) < 3:
            raise OSError("No space left on device")
        model.state = "ready"

    model.train = flaky
    for step in range(10):
        model.offer("a", np.array([step], np.float32))
    start(model)
    assert model.state == "failed" and model.error == "OSError: No space left on device"
    first_retry = model.retry_at
    assert not model.retry_if_due(now=first_retry - 0.1)
    assert model.retry_if_due(now=first_retry)
    start(model)
    assert model.state == "failed" and model.failures == 2
    assert model.retry_at - time.monotonic() > 9  # the backoff doubled: 5 s, then 10 s
    assert model.retry_if_due(now=model.retry_at)
    start(model)
    assert model.state == "ready" and len(attempts) == 3
    assert attempts[0] is attempts[2]  # the same warm-up data, kept for the retries


def test_a_retry_that_fails_between_two_loop_turns_is_still_counted(tmp_path):
    """The state reads ``failed`` before and after such a retry; the counter must move (the
    metrics are read from the lifecycle at scrape time, so no loop turn is needed)."""
    from streamdet.app import Application
    from streamdet.config import load_config_text

    config = load_config_text(
        f"""
topics:
  - name: t
    window: {{seq_len: 2}}
    detector: {{name: seq2seq, params: {{latent_dims: 8}}, warmup_events: 10, retry_after_s: 600}}
alerts: {{file: null, stdout: false}}
models: {{store: {tmp_path}}}
""",
        environ={},
    )
    app = Application(config, serve_metrics=False, progress=lambda m: None)
    model = app.pipelines["t"].lifecycle
    failures = {"topic": "t"}

    def counted() -> float | None:
        return app.metrics.registry.get_sample_value(
            "streamdet_model_training_failures_total", failures
        )

    for step in range(10):
        model.offer("a", np.array([step], np.float32))
    start(model)
    assert model.state == "failed" and counted() == 1
    assert model.retry_if_due(now=model.retry_at)
    start(model)  # failed again before the loop looked: no state change to notice
    assert model.failures == 2 and counted() == 2


def test_mistyped_params_fail_with_the_detectors_message(tmp_path):
    topic = TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 4},
            "detector": {"name": "seq2seq", "params": {"latent_dims": 8}},
        }
    )
    model = ModelLifecycle(topic, tmp_path, 1, progress=lambda m: None)
    with pytest.raises(StreamdetError, match=r"detector\.params does not fit seq2seq.*latent_dims"):
        model.train({"a": np.zeros((20, 1), np.float32)})


def test_an_out_of_range_param_names_the_topic_and_the_allowed_range(tmp_path):
    topic = TopicConfig.model_validate(
        {
            "name": "plant",
            "window": {"seq_len": 4},
            "detector": {"name": "seq2seq", "params": {"validation_fraction": 1.5}},
        }
    )
    model = ModelLifecycle(topic, tmp_path, 1, progress=lambda m: None)
    with pytest.raises(
        StreamdetError,
        match=r"topic plant: detector\.params.*validation_fraction must be in \[0, 1\); got 1\.5",
    ):
        model.train({"a": np.zeros((20, 1), np.float32)})


def test_the_warm_up_holds_at_most_max_series_series(tmp_path):
    topic = TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 2},
            "detector": {"name": "seq2seq", "warmup_events": 10},
            "max_series": 5,
        }
    )
    model = ModelLifecycle(topic, tmp_path, 1, progress=lambda m: None)
    for i in range(1000):  # a producer inventing a new series key with every event
        model.offer(f"s{i}", np.array([1.0], np.float32), all_partitions_seen=False)
    assert len(model._warmup) == 5 and len(model._offered) == 5


def retraining_model(tmp_path, **retrain) -> ModelLifecycle:
    topic = TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 2},
            "detector": {"name": "seq2seq", "warmup_events": 10},
            "retrain": retrain,
        }
    )
    model = ModelLifecycle(topic, tmp_path, 1, progress=lambda m: None)
    model.state = "ready"  # as if a model were serving
    return model


def test_retraining_triggers_on_events_event_time_and_drift(tmp_path):
    assert retraining_model(tmp_path).history is None  # no retrain policy: nothing kept
    by_events = retraining_model(tmp_path, every_events=300, min_events_between=100)
    for k in range(299):
        by_events.observe("s", k * 1000, np.array([1.0]))
    assert by_events.retrain_due(drift=None) is None
    by_events.observe("s", 299_000, np.array([1.0]))
    assert by_events.retrain_due(drift=None) == "events"

    by_time = retraining_model(tmp_path, every_s=60, min_events_between=10)
    for k in range(20):
        by_time.observe("s", k * 1000, np.array([1.0]))
    assert by_time.retrain_due(drift=None) is None
    by_time.observe("s", 61_000, np.array([1.0]))
    assert by_time.retrain_due(drift=None) == "time"

    by_drift = retraining_model(tmp_path, on_drift=0.3, min_events_between=50)
    for k in range(49):
        by_drift.observe("s", k, np.array([1.0]))
    assert by_drift.retrain_due(drift=0.9) is None  # too soon after the last training
    by_drift.observe("s", 50, np.array([1.0]))
    assert by_drift.retrain_due(drift=0.2) is None and by_drift.retrain_due(drift=0.3) == "drift"
    by_drift.retraining = True
    assert by_drift.retrain_due(drift=0.9) is None  # one retraining at a time


def test_recent_history_is_bounded_and_leaves_alerted_windows_out(tmp_path):
    model = retraining_model(tmp_path, every_events=1000, history_events=50)
    for k in range(200):
        model.observe("a", k, np.array([float(k)]))
    model.exclude("a", 160, 169)
    runs = model.history.normal_runs(window=2)["a"]
    assert [len(r) for r in runs] == [10, 30]  # the last 50 events, minus the alerted ones
    assert runs[0][-1, 0] == 159.0 and runs[1][0, 0] == 170.0
    model.state = "warming"
    model.observe("a", 999, np.array([0.0]))  # the warm-up is not history
    assert len(model.history) == 50
    model.state = "ready"
    for k in range(200, 250):  # an alert every 3 events: runs too short for windows of 4
        model.observe("a", k, np.array([float(k)]))
        if k % 3 == 0:
            model.exclude("a", k, k)
    assert [len(r) for r in model.history.normal_runs(window=4)["a"]] == [50]
