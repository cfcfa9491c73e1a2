"""The isolation forest scores exactly as scikit-learn's, without keeping its estimator."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from streamdet.detectors.iforest import IsolationForestDetector


def test_scores_equal_scikit_learns_for_the_same_forest():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(3000, 7)).astype(np.float32)
    rows[:, 2] *= 10
    ours = IsolationForestDetector(seed=3)
    ours.fit(rows)
    reference = IsolationForest(n_estimators=100, max_samples=256, random_state=3).fit(rows)
    queries = (2 * rng.normal(size=(500, 7))).astype(np.float32)
    scores = ours.score(queries).instance_score
    np.testing.assert_allclose(scores, -reference.score_samples(queries), rtol=0, atol=1e-12)


def test_a_small_training_set_draws_every_instance_for_each_tree():
    rows = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    forest = IsolationForestDetector(trees=10, seed=0)
    assert forest.fit(rows)["max_samples"] == 40
    assert np.all(np.isfinite(forest.score(rows).instance_score))
