"""The ensemble's calibration and its refusals (the generic contract suite runs it through
fit, batch invariance, fresh-process load and a lifecycle retraining)."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError
from streamdet.detectors.ensemble import EnsembleDetector, fisher_surprise, tail_probability


def test_tail_probability_is_monotone_bounded_and_keeps_falling_beyond_the_calibration():
    calibration = np.sort(np.random.default_rng(0).exponential(size=1000))
    scores = np.linspace(-1.0, 30.0, 400)
    p = tail_probability(calibration, scores, 0.1)
    assert np.all((p > 0) & (p <= 1)) and np.all(np.diff(p) <= 0)
    assert p[0] == 1.0  # below everything seen
    inside = tail_probability(calibration, np.array([np.median(calibration)]), 0.1)[0]
    assert inside == pytest.approx(0.5, abs=0.01)
    beyond = tail_probability(
        calibration, np.array([calibration[-1] + 5, calibration[-1] + 10]), 0.1
    )
    assert beyond[0] < 1 / 1001 and beyond[1] < beyond[0] / 10  # not stuck at 1/(n+1)


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([{"name": "pca"}], "at least two"),
        ([{"name": "pca"}, {"name": "ensemble"}], "cannot be an ensemble"),
        ([{"name": "pca"}, {"name": "pca", "parms": {}}], "unknown keys"),
        ([{"name": "pca"}, "pca"], "members\\[1\\]"),
        ([{"name": "pca"}, {"name": "vae_lstm"}], "longer than the window"),
    ],
)
def test_members_that_cannot_work_are_refused_with_the_reason(members, why):
    with pytest.raises(InvalidInputError, match=why):
        EnsembleDetector(members=members)


def test_the_surprise_of_any_member_raises_the_score():
    """Two members see different things: PCA of the shape and PCA of the level (one
    component). A bent window surprises one of them, and the ensemble's score rises."""
    rng = np.random.default_rng(1)
    windows = np.sin(np.arange(16) / 3.0)[None, :, None] + 0.05 * rng.normal(size=(600, 16, 1))
    ensemble = EnsembleDetector(
        members=[{"name": "pca"}, {"name": "pca", "params": {"n_components": 1}}]
    )
    ensemble.fit(windows[:500])
    probabilities, _ = ensemble.member_probabilities(windows[500:])
    assert probabilities.shape == (2, 100) and probabilities.min() > 0
    bent = windows[500:501].copy()
    bent[0, 5] += 3.0
    assert ensemble.score(bent).instance_score[0] > np.quantile(
        ensemble.score(windows[500:]).instance_score, 0.99
    )


def test_fisher_matches_the_chi_square_tail_and_rewards_agreement():
    from scipy.stats import chi2

    rng = np.random.default_rng(3)
    probabilities = rng.uniform(1e-6, 1.0, size=(3, 50))
    statistic = -2 * np.log(probabilities).sum(axis=0)
    expected = -np.log10(chi2.sf(statistic, 6))
    np.testing.assert_allclose(fisher_surprise(probabilities), expected, rtol=1e-9)
    with pytest.raises(InvalidInputError, match="combine must be one of min_p, fisher"):
        EnsembleDetector(members=[{"name": "pca"}, {"name": "pca"}], combine="mean")
