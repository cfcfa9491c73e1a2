"""The threshold rules' own maths: SPOT, DSPOT, the dynamic threshold, the likelihood and the
percentile helpers (the policy over them is in test_policy.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import genpareto

from streamdet.core.errors import InvalidInputError
from streamdet.thresholds import (
    AnomalyLikelihood,
    DriftingSpot,
    Spot,
    fit_generalised_pareto,
    percentile_threshold,
    top_percent_mean,
)
from streamdet.thresholds.dynamic import DynamicThreshold
from streamdet.thresholds.likelihood import LikelihoodParams


@pytest.mark.parametrize("shape", [-0.3, 0.0, 0.25])
def test_tail_fit_is_the_maximum_likelihood_fit(shape):
    excesses = genpareto.rvs(shape, scale=2.0, size=4000, random_state=3)
    xi, sigma = fit_generalised_pareto(excesses)
    ref_xi, _, ref_sigma = genpareto.fit(excesses, floc=0)
    assert xi == pytest.approx(ref_xi, abs=0.01) and sigma == pytest.approx(ref_sigma, rel=0.01)


@pytest.mark.parametrize("draw", ["lognormal", "gumbel", "student"])
def test_spot_keeps_the_false_alarm_rate_near_its_risk(draw):
    rng = np.random.default_rng(5)

    def sample(n: int) -> np.ndarray:
        if draw == "lognormal":
            return rng.lognormal(size=n)
        if draw == "gumbel":
            return rng.gumbel(size=n)
        return rng.standard_t(5, size=n)

    risk = 1e-3
    spot = Spot(risk=risk).fit(sample(20_000))
    rate = spot.flags(sample(100_000)).mean()
    assert risk / 4 <= rate <= risk * 3, rate


def test_spot_state_stays_bounded_and_follows_the_stream():
    rng = np.random.default_rng(0)
    spot = Spot(risk=1e-3, max_peaks=100).fit(rng.exponential(size=5000))
    before = spot.threshold
    for value in rng.exponential(2.0, size=20_000):  # the normal scores double in scale
        spot.update(value)
    assert spot._n_peaks == 100 and spot._peaks.nbytes == 400
    assert spot.threshold > 1.5 * before  # the tail learnt the new scale from its peaks


def test_dspot_rides_a_drift_that_spot_flags_for_good():
    rng = np.random.default_rng(1)
    calm = rng.normal(size=4000)
    drifted = rng.normal(size=2000) + np.minimum(np.arange(2000) * 0.1, 30)
    assert Spot(risk=1e-3).fit(calm).flags(drifted)[-500:].all()
    dspot = DriftingSpot(risk=1e-3, depth=10).fit(calm)
    assert dspot.flags(drifted).mean() < 0.01
    assert dspot.flags(np.r_[drifted, drifted[-1] + 40.0])[-1]


def test_dynamic_threshold_never_goes_below_its_tail_floor():
    rng = np.random.default_rng(2)
    calibration = rng.normal(size=5000)
    rule = DynamicThreshold(risk=1e-2, history=200, refresh=10).fit(calibration)
    rule.flags(np.zeros(1000))  # a flat stream: mean + z * sd collapses to 0
    quiet = DynamicThreshold(risk=1e-2, history=200, refresh=10).fit(calibration)
    for _ in range(1000):
        quiet.update(0.0)
    assert quiet.threshold == pytest.approx(Spot(risk=1e-2).fit(calibration).threshold)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Spot(risk=0.0), "risk must be within"),
        (lambda: Spot().fit(np.ones(10)), "at least 40 finite calibration scores"),
        (lambda: AnomalyLikelihood(risk=0.7), "risk must be within"),
        (lambda: Spot().update(1.0), "fit must run before update"),
        (lambda: Spot().fit(np.arange(100.0)).update(float("nan")), "must be finite"),
        (lambda: DriftingSpot(depth=0), "depth must be at least 1"),
        (lambda: DynamicThreshold(history=5), "history >= 20"),
    ],
)
def test_bad_use_names_the_rule_and_the_expected_value(call, message):
    with pytest.raises(InvalidInputError, match=message):
        call()


def test_feature_wise_threshold_differs_per_feature_and_scalar_pools_them():
    rng = np.random.default_rng(0)
    scores = np.stack([rng.normal(0, 1, 5000), rng.normal(10, 1, 5000)], axis=1)
    per_feature = percentile_threshold(scores, 95, feature_wise=True)
    scalar = percentile_threshold(scores, 95)
    assert per_feature.shape == (2,)
    assert per_feature[0] == pytest.approx(1.645, abs=0.1)
    assert per_feature[1] == pytest.approx(11.645, abs=0.1)
    assert per_feature[0] < scalar < per_feature[1] + 1e-9


def test_outlier_perc_scores_an_instance_by_its_worst_cells():
    cells = np.zeros((2, 10, 1))
    cells[1, 3, 0] = 10.0  # one bad cell in instance 1
    assert top_percent_mean(cells, 10).tolist() == [0.0, 10.0]
    assert top_percent_mean(cells, 100).tolist() == [0.0, 1.0]
    with pytest.raises(InvalidInputError, match="outlier_perc"):
        top_percent_mean(cells, 0)


def test_likelihood_streaming_equals_batch_and_flags_a_jump():
    rng = np.random.default_rng(1)
    scores = np.r_[rng.gamma(2.0, 0.1, 400), [3.0, 3.0]]
    policy = AnomalyLikelihood(history=200, short_window=2, learning_period=50)
    streamed = [policy.update(s) for s in scores]
    np.testing.assert_allclose(streamed, policy.transform(scores))
    assert streamed[10] == 0.5
    assert streamed[-1] > 0.9999
    assert np.median(streamed[100:400]) < 0.8


@pytest.mark.parametrize("other_risk", [1e-5, 1e-3])
def test_one_likelihood_runs_severities_answer_for_another_risk(other_risk):
    """What ``evaluate nab`` reports per sensitivity from one replay: the rule run at
    another risk flags exactly where this run's severity reaches ``severity_at``."""
    rng = np.random.default_rng(3)
    scores = np.r_[
        rng.gamma(2.0, 0.1, 600), rng.gamma(2.0, 0.1, 50) + 1.0, rng.gamma(2.0, 0.1, 200)
    ]
    configured, other = LikelihoodParams(risk=1e-4), LikelihoodParams(risk=other_risk)
    severity = np.array(
        [d.severity for d in AnomalyLikelihood.from_params(configured).decide_all(scores)]
    )
    flags = AnomalyLikelihood.from_params(other).flags(scores)
    assert flags.any() and not flags.all()
    theta = AnomalyLikelihood.severity_at(configured, other)
    np.testing.assert_array_equal(severity >= theta - 1e-12, flags)


def test_dspot_follows_a_lasting_step_of_the_scores_instead_of_alarming_for_ever():
    rng = np.random.default_rng(6)
    dspot = DriftingSpot(risk=1e-3, depth=20).fit(rng.normal(size=3000) * 0.1)
    stepped = 2.0 + rng.normal(size=2000) * 0.1  # the scores' level moved for good
    flags = dspot.flags(stepped)
    # The step alarms at first, then the local mean follows it (a fault found in the daemon:
    # one level change of the scores re-alerted every cooldown for hours).
    assert flags[:5].all() and flags[200:].sum() <= 3
    assert dspot.flags(np.r_[stepped, 9.0])[-1]  # a spike on the new level still alarms
