"""Label-free threshold rules: SPOT, DSPOT, the dynamic threshold and the alert policy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import genpareto

from streamdet.config import ThresholdConfig
from streamdet.errors import InvalidInputError
from streamdet.evaluation.thresholding import POLICIES, compare_policies, policy_flags
from streamdet.pipeline.models import calibration_by_series
from streamdet.pipeline.policy import AlertPolicy
from streamdet.thresholds import DriftingSpot, DynamicThreshold, Spot, fit_generalised_pareto


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
        (lambda: Spot().update(1.0), "fit must run before update"),
        (lambda: Spot().fit(np.arange(100.0)).update(float("nan")), "must be finite"),
        (lambda: DriftingSpot(depth=0), "depth must be at least 1"),
        (lambda: DynamicThreshold(history=5), "history >= 20"),
    ],
)
def test_bad_use_names_the_rule_and_the_expected_value(call, message):
    with pytest.raises(InvalidInputError, match=message):
        call()


def spot_policy(**overrides) -> AlertPolicy:
    return AlertPolicy(ThresholdConfig(policy="spot", **overrides), cooldown_ms=0, max_series=8)


def test_each_series_starts_from_its_own_calibration_scores():
    rng = np.random.default_rng(4)
    quiet, loud = rng.normal(size=800), 10 + 3 * rng.normal(size=800)
    policy = spot_policy(risk=1e-3)
    model = object()
    policy.calibrate(model, np.r_[quiet, loud], {"quiet": quiet, "loud": loud})
    assert not policy.decide("loud", 15.0, False, 0)  # normal for the loud series
    assert policy.decide("quiet", 15.0, False, 0)  # far beyond the quiet one
    assert policy.decide("newcomer", 40.0, False, 0)  # a series not seen in training: pooled
    assert policy.threshold_for("quiet") < 10 < policy.threshold_for("loud")


def test_a_new_model_resets_the_tails_and_a_model_without_scores_learns_first():
    policy = spot_policy()
    first = object()
    policy.calibrate(first, np.arange(1000.0))
    assert policy.decide("a", 5000.0, False, 0)
    policy.calibrate(first, np.arange(10.0))  # the same model: nothing changes
    assert policy.threshold_for("a") is not None
    policy.calibrate(object(), None)  # a model saved before calibration scores were kept
    assert policy.threshold_for("a") is None
    flags = [policy.decide("a", float(v), False, 0) for v in range(AlertPolicy.LEARNING_SCORES)]
    assert not any(flags) and policy.threshold_for("a") is not None
    assert policy.decide("a", 1e6, False, 0)
    policy.forget("a")
    assert policy.threshold_for("a") is None


def test_per_series_calibration_is_kept_only_while_it_fits_the_budget():
    few = calibration_by_series({f"s{k}": np.arange(5000.0) for k in range(4)})
    assert sorted(few) == ["s0", "s1", "s2", "s3"] and len(few["s0"]) == 5000
    assert calibration_by_series({f"s{k}": np.arange(50.0) for k in range(1000)}) == {}


def test_every_policy_is_compared_on_the_same_scores_without_test_labels():
    rng = np.random.default_rng(8)
    calibration = rng.normal(size=3000)
    scores = np.r_[rng.normal(size=2000), rng.normal(8, 1, size=20)]
    labels = np.r_[np.zeros(2000), np.ones(20)]
    reports, alarms = compare_policies(labels, scores, calibration, scores > 3.0, risk=1e-3)
    assert tuple(reports) == POLICIES
    assert reports["protocol"]["recall"] == 1.0
    for policy in ("spot", "dspot", "likelihood"):
        assert reports[policy]["recall"] >= 0.9 and reports[policy]["fp"] <= 10, policy
    assert alarms["spot"].dtype == bool and len(alarms["spot"]) == len(scores)
    # The labels never reach a label-free policy: shuffled labels, the same alarms.
    shuffled = labels[rng.permutation(len(labels))]
    assert (
        compare_policies(shuffled, scores, calibration, scores > 3.0)[1]["spot"] == alarms["spot"]
    ).all()
    assert (policy_flags("spot", calibration, scores) == alarms["spot"]).all()
    with pytest.raises(InvalidInputError, match="unknown label-free policy"):
        policy_flags("protocol", calibration, scores)


def test_score_drift_compares_recent_scores_with_the_serving_models_calibration():
    from streamdet.pipeline.drift import ScoreDrift, ks_distance

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


def test_likelihood_starts_again_from_the_new_models_calibration_scores():
    rng = np.random.default_rng(5)
    policy = AlertPolicy(
        ThresholdConfig(policy="likelihood", likelihood=0.999), cooldown_ms=0, max_series=8
    )
    old_scale, new_scale = rng.normal(0, 1, 1000), rng.normal(-50, 1, 1000)
    policy.calibrate(object(), old_scale, {"a": old_scale})
    assert not any(policy.decide("a", float(s), False, 0) for s in rng.normal(0, 1, 50))
    # A retrained model scores 50 lower: judged against the old history, its anomalies
    # would look like the quietest windows ever seen.
    policy.calibrate(object(), new_scale, {"a": new_scale})
    assert not any(policy.decide("a", float(s), False, 0) for s in rng.normal(-50, 1, 50))
    assert all(policy.decide("a", -30.0, False, 0) for _ in range(3))


def test_dspot_follows_a_lasting_step_of_the_scores_instead_of_alarming_for_ever():
    rng = np.random.default_rng(6)
    dspot = DriftingSpot(risk=1e-3, depth=20).fit(rng.normal(size=3000) * 0.1)
    stepped = 2.0 + rng.normal(size=2000) * 0.1  # the scores' level moved for good
    flags = dspot.flags(stepped)
    # The step alarms at first, then the local mean follows it (a fault found in the daemon:
    # one level change of the scores re-alerted every cooldown for hours).
    assert flags[:5].all() and flags[200:].sum() <= 3
    assert dspot.flags(np.r_[stepped, 9.0])[-1]  # a spike on the new level still alarms
