"""An alert's explanation: bounded whatever the topic's shape, finite numbers or null, and a
picture for each kind of topic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamdet.commands.explain import draw
from streamdet.runtime.explanation import GRID, MAX_FEATURES, MAX_STEPS, explain


def _alert(explanation: dict) -> dict:
    return {
        "alert_id": "a" * 32,
        "topic": "t",
        "series": "s",
        "window_start": 0,
        "window_end": 9,
        "rule": "spot",
        "threshold": 1.0,
        "score": 3.0,
        "severity": 3.0,
        "explanation": explanation,
    }


def test_a_huge_window_gives_a_few_kilobytes_with_the_guilty_feature_first() -> None:
    steps, features = 2000, 300
    values = np.random.default_rng(0).normal(size=(steps, features))
    scores = np.abs(values) * 0.01
    scores[-3, 123] = 50.0
    values[-3, 123] = 40.0
    names = tuple(f"f{k}" for k in range(features))
    out = explain("timeseries", values, scores, np.zeros_like(values), names)
    assert len(json.dumps(out)) < 64_000
    assert out["first_step"] == steps - MAX_STEPS and len(out["observed"]) == MAX_STEPS
    assert len(out["features"]) == MAX_FEATURES and out["features"][0] == "f123"
    top = out["top_steps"][0]
    assert (top["step"], top["steps_before_end"], top["feature"]) == (steps - 3, 2, "f123")
    assert (top["observed"], top["expected"]) == (40.0, 0.0)


def test_a_row_names_its_most_anomalous_features_with_observed_and_expected() -> None:
    values = np.array([1.0, 2.0, np.nan, 4.0])
    scores = np.array([0.1, 5.0, 0.2, np.inf])
    out = explain("tabular", values, scores, np.array([1.0, 0.5, 0.0, 4.0]), tuple("abcd"))
    assert out["features"][:2] == ["d", "b"]
    row_b = next(row for row in out["top_features"] if row["feature"] == "b")
    assert (row_b["observed"], row_b["expected"], row_b["score"]) == (2.0, 0.5, 5.0)
    assert out["observed"][out["features"].index("c")] is None  # NaN is never written as NaN
    json.dumps(out, allow_nan=False)


def test_an_image_gives_a_coarse_map_where_the_error_sits() -> None:
    scores = np.zeros((28, 28, 1))
    scores[:4, -4:] = 1.0
    out = explain("image", np.zeros((28, 28, 1)), scores, None, ())
    error_map = np.asarray(out["error_map"])
    assert error_map.shape == (GRID, GRID)
    assert np.unravel_index(error_map.argmax(), error_map.shape) == (0, GRID - 1)
    assert error_map.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("kind", ["timeseries", "tabular", "image"])
def test_explain_draws_every_kind(kind: str, tmp_path: Path) -> None:
    shape = {"timeseries": (40, 3), "tabular": (6,), "image": (16, 16, 1)}[kind]
    values = np.random.default_rng(1).normal(size=shape)
    names = tuple(f"x{k}" for k in range(shape[-1]))
    explanation = explain(kind, values, np.abs(values), values * 0.5, names)
    picture = draw(_alert(explanation), tmp_path / f"{kind}.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000
