"""The score-drift monitor that triggers retrainings."""

from __future__ import annotations

import numpy as np


def test_score_drift_compares_recent_scores_with_the_serving_models_calibration():
    from streamdet.serving.drift import ScoreDrift, ks_distance

    rng = np.random.default_rng(9)
    drift = ScoreDrift(window=300, min_scores=100)
    old_model, new_model = object(), object()
    drift.reference(old_model, rng.normal(size=3000))
    for value in rng.normal(size=99):
        drift.observe(float(value))
    assert drift.statistic() is None  # too few recent scores to say anything
    drift.observe(float("nan"))  # ignored, as a window that failed to score
    drift.observe(0.0)
    assert drift.statistic() < 0.2
    for value in rng.normal(2.0, 1.0, size=300):  # the stream moved
        drift.observe(float(value))
    assert drift.statistic() > 0.6
    drift.reference(old_model, rng.normal(5, 1, size=10))  # same model: nothing changes
    assert drift.statistic() > 0.6
    drift.reference(new_model, rng.normal(2.0, 1.0, size=3000))  # retrained on the new level
    assert drift.statistic() is None
    for value in rng.normal(2.0, 1.0, size=300):
        drift.observe(float(value))
    assert drift.statistic() < 0.2
    drift.reference(object(), None)  # a model saved before calibration scores were kept
    assert drift.statistic() is None
    assert ks_distance(np.arange(10.0), np.arange(10.0)) == 0.0
