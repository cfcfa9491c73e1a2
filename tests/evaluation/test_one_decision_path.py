"""One decision path: for every registered threshold rule, the windows ``evaluate`` flags are
exactly the windows the daemon flags, and the daemon's alerts report that rule's threshold
and severity.

One tiny model is trained once and stored; each rule then replays the same stream (with a
spike and a level step) through the daemon's own :class:`Application` (in process, its
replay mode), and the very scores it recorded go through ``evaluate``'s
:func:`policy_flags` with the model's stored calibration.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamdet.app import Application
from streamdet.config import StreamdetConfig
from streamdet.evaluation.thresholding import policy_flags, threshold_rules
from streamdet.io.sinks.alerts import JsonLinesAlertSink
from streamdet.io.sinks.scores import ScoreRecorder
from streamdet.io.sources.replay import ReplaySource
from streamdet.serving.bundle import ServingBundle
from streamdet.serving.lifecycle import ModelLifecycle
from streamdet.thresholds import rule_names

SEQ_LEN = 8
SERIES = ("a", "b")


def values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(np.arange(n) / 4.0) + 0.05 * rng.normal(size=n)


def config(store, threshold: dict) -> StreamdetConfig:
    return StreamdetConfig.model_validate(
        {
            "topics": [
                {
                    "name": "plant",
                    "format": {"series_key": "s", "timestamp_field": "ts"},
                    "window": {"seq_len": SEQ_LEN},
                    "detector": {
                        "name": "seq2seq",
                        "params": {"latent_dim": 4, "epochs": 2, "seed": 0},
                        "warmup_events": 300,
                    },
                    "threshold": threshold,
                }
            ],
            "alerts": {"cooldown_s": 0, "file": None, "stdout": False},
            "models": {"store": str(store)},
        }
    )


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    topic = config(store, {}).topics[0]
    lifecycle = ModelLifecycle(topic, store, 1, progress=lambda line: None)
    lifecycle.train(
        {name: values(600, k)[:, None].astype(np.float32) for k, name in enumerate(SERIES)}
    )
    return store


def stream() -> list[tuple[str, dict]]:
    records = []
    for k, name in enumerate(SERIES):
        series = values(700, 10 + k)
        series[300] += 4.0  # a spike
        series[500:] += 1.5 * k  # b's level steps up for good
        records += [
            (name, {"s": name, "ts": 1000 * i, "value": float(v)}) for i, v in enumerate(series)
        ]
    return records


@pytest.mark.parametrize("rule", rule_names())
def test_evaluate_and_the_daemon_flag_the_same_windows(trained_store, tmp_path, rule):
    params = threshold_rules({"risk": 1e-3})[rule]
    recorder = ScoreRecorder()
    alerts_file = tmp_path / "alerts.jsonl"
    app = Application(
        config(trained_store, params.model_dump()),
        source=ReplaySource("plant", stream()),
        alert_sinks=[JsonLinesAlertSink(alerts_file, echo=False)],
        dead_letter_sinks=[],
        progress=lambda line: None,
        serve_metrics=False,
        scores=recorder,
        synchronous=True,
    )
    assert app.run(install_signal_handlers=False) == 0
    bundle = ServingBundle.load(trained_store / "plant" / "versions" / "v000001")
    flagged_somewhere = 0
    for name in SERIES:
        mine = [s for s in recorder.windows if s.window.series == name]
        assert len(mine) == 700 - SEQ_LEN + 1
        scores = np.array([s.score for s in mine])
        daemon = np.array([s.decision.flagged for s in mine])
        evaluate = policy_flags(params, bundle.calibration, scores, series=name)
        np.testing.assert_array_equal(evaluate, daemon, err_msg=f"{rule}, series {name}")
        flagged_somewhere += int(daemon.sum())
    assert flagged_somewhere > 0, f"{rule} flagged nothing: the comparison would prove little"
    alerts = [json.loads(line) for line in alerts_file.read_text().splitlines()]
    decided = {(s.window.series, s.window.end_offset): s.decision for s in recorder.windows}
    assert alerts and all(a["rule"] == rule for a in alerts)
    for alert in alerts:
        decision = decided[(alert["series"], alert["window_end_offset"])]
        assert decision.alert
        assert alert["threshold"] == decision.threshold and alert["severity"] == decision.severity
