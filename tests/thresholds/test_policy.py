"""The one decision path: per-series rules fitted on a model's calibration, then the cooldown;
the config's ``threshold`` derived from the rule registry."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.config import load_config_text
from streamdet.core.errors import ConfigError
from streamdet.serving.bundle import calibration_from_scores
from streamdet.thresholds import Calibration, DecisionPolicy, rule_params


def policy(cooldown_ms: int = 0, **params) -> DecisionPolicy:
    return DecisionPolicy(rule_params(params), cooldown_ms=cooldown_ms, max_series=8)


def test_each_series_starts_from_its_own_calibration_scores():
    rng = np.random.default_rng(4)
    quiet, loud = rng.normal(size=800), 10 + 3 * rng.normal(size=800)
    spot = policy(policy="spot", risk=1e-3)
    spot.start(Calibration(np.r_[quiet, loud], {"quiet": quiet, "loud": loud}))
    assert not spot.decide("loud", 15.0, 0).flagged  # normal for the loud series
    quiet_decision = spot.decide("quiet", 15.0, 0)
    assert quiet_decision.flagged and quiet_decision.alert  # far beyond the quiet one
    assert spot.decide("newcomer", 40.0, 0).flagged  # a series not seen in training: pooled
    assert quiet_decision.threshold < 10 < spot.decide("loud", 0.0, 0).threshold


def test_a_percentile_threshold_is_pooled_over_the_series():
    rng = np.random.default_rng(4)
    quiet, loud = rng.normal(size=800), 10 + 3 * rng.normal(size=800)
    pooled = policy(policy="percentile", threshold_perc=99)
    pooled.start(Calibration(np.r_[quiet, loud], {"quiet": quiet, "loud": loud}))
    assert pooled.decide("quiet", 0.0, 0).threshold == pooled.decide("loud", 0.0, 0).threshold


def test_a_new_model_resets_the_rules_and_a_model_without_scores_learns_first():
    spot = policy(policy="spot")
    spot.start(Calibration(np.arange(1000.0)))
    assert spot.decide("a", 5000.0, 0).flagged
    spot.start(Calibration())  # a model saved without calibration scores
    learning = [spot.decide("a", float(v), 0) for v in range(DecisionPolicy.LEARNING_SCORES)]
    assert not any(d.flagged for d in learning) and np.isnan(learning[0].threshold)
    assert np.isfinite(spot.decide("a", 1.0, 0).threshold)
    assert spot.decide("a", 1e6, 0).flagged
    spot.forget("a")
    assert np.isnan(spot.decide("a", 1.0, 0).threshold)


def test_likelihood_starts_again_from_the_new_models_calibration_scores():
    rng = np.random.default_rng(5)
    likelihood = policy(policy="likelihood", likelihood=0.999, short_window=5)
    old_scale, new_scale = rng.normal(0, 1, 1000), rng.normal(-50, 1, 1000)
    likelihood.start(Calibration(old_scale, {"a": old_scale}))
    assert not any(likelihood.decide("a", float(s), 0).flagged for s in rng.normal(0, 1, 50))
    # A retrained model scores 50 lower: judged against the old history, its anomalies
    # would look like the quietest windows ever seen.
    likelihood.start(Calibration(new_scale, {"a": new_scale}))
    assert not any(likelihood.decide("a", float(s), 0).flagged for s in rng.normal(-50, 1, 50))
    assert all(likelihood.decide("a", -30.0, 0).flagged for _ in range(3))


def test_the_likelihood_threshold_is_the_score_that_would_alert():
    rng = np.random.default_rng(6)
    calm = rng.normal(0, 1, 2000)
    likelihood = policy(policy="likelihood", risk=1e-4, short_window=1)
    likelihood.start(Calibration(calm))
    needed = likelihood.judge("a", 0.0).threshold
    below = policy(policy="likelihood", risk=1e-4, short_window=1)
    below.start(Calibration(calm))
    assert not below.judge("a", needed - 1e-6).flagged
    above = policy(policy="likelihood", risk=1e-4, short_window=1)
    above.start(Calibration(calm))
    decision = above.judge("a", needed + 1e-6)
    assert decision.flagged and decision.severity == pytest.approx(1.0, abs=1e-3)


def test_the_cooldown_holds_back_alerts_not_flags():
    spot = policy(cooldown_ms=1000, policy="spot", risk=1e-3)
    spot.start(Calibration(np.random.default_rng(0).normal(size=2000)))
    decisions = [spot.decide("a", 50.0, ts) for ts in (0, 400, 1400, 1000)]
    assert [d.flagged for d in decisions] == [True] * 4
    assert [d.alert for d in decisions] == [True, False, True, False]


def test_per_series_calibration_is_kept_only_while_it_fits_the_budget():
    few = calibration_from_scores(np.arange(20_000.0), {f"s{k}": 5000 for k in range(4)})
    assert sorted(few.by_series) == ["s0", "s1", "s2", "s3"]
    assert len(few.by_series["s0"]) == 5000 and len(few.pooled) == 20_000
    many = calibration_from_scores(np.arange(50_000.0), {f"s{k}": 50 for k in range(1000)})
    assert many.by_series == {} and len(many.pooled) == 50_000


def test_the_threshold_section_is_any_registered_rule_with_its_own_parameters():
    def threshold(yaml: str):
        text = f"topics: [{{name: t, detector: {{name: seq2seq}}, threshold: {yaml}}}]"
        return load_config_text(text, environ={}).topics[0].threshold

    assert threshold("{}").policy == "percentile"
    old = threshold("{policy: detector, threshold_perc: 95, margin_perc: 5}")
    assert (old.policy, old.threshold_perc, old.margin_perc) == ("percentile", 95, 5)
    assert threshold("{policy: likelihood, likelihood: 0.999}").risk == pytest.approx(1e-3)
    assert threshold("{policy: dspot, drift_depth: 5}").drift_depth == 5
    with pytest.raises(ConfigError, match=r"threshold\.risk: .*less than 0\.5"):
        threshold("{policy: spot, risk: 2}")
    with pytest.raises(ConfigError, match=r"threshold\.drift_depth: unknown key"):
        threshold("{policy: spot, drift_depth: 3}")
    with pytest.raises(ConfigError, match="'dspot', 'dynamic', 'likelihood', 'percentile'"):
        threshold("{policy: sometimes}")


def test_cooldown_is_symmetric_so_a_future_timestamp_cannot_silence_a_series():
    pooled = policy(cooldown_ms=60_000, threshold_perc=50)
    pooled.start(Calibration(np.arange(100.0)))
    far_future = 10**13
    assert pooled.decide("a", 1e3, far_future).alert
    assert pooled.decide("a", 1e3, 1_800_000_000_000).alert  # hours "before": not silenced
    assert not pooled.decide("a", 1e3, 1_800_000_030_000).alert


def test_policy_state_is_bounded():
    likelihood = DecisionPolicy(rule_params({"policy": "likelihood"}), 0, max_series=100)
    likelihood.start(Calibration(np.random.default_rng(0).normal(size=500)))
    for i in range(10_000):
        likelihood.decide(f"s{i}", 0.1, i)
    assert len(likelihood) == 100


def test_a_margin_raises_the_percentile_threshold_by_its_share():
    calibration = Calibration(np.random.default_rng(2).normal(5, 1, size=4000))
    plain, raised = policy(threshold_perc=100), policy(threshold_perc=100, margin_perc=50)
    plain.start(calibration)
    raised.start(calibration)
    threshold = plain.decide("a", 0.0, 0).threshold
    assert threshold == pytest.approx(calibration.pooled.max())
    assert raised.decide("a", 0.0, 0).threshold == pytest.approx(1.5 * threshold)


def test_likelihood_severity_keeps_ranking_excursions_beyond_float_precision():
    # 1 - likelihood rounds to 0 beyond about 8 sigma; the severity must still order a
    # stronger excursion above a weaker one (the operator's ranking, NAB's sweep).
    calibration = np.random.default_rng(1).normal(10.0, 1.0, 3000)
    severities = []
    for excursion in (12.0, 20.0, 40.0, 80.0):
        likelihood = policy(policy="likelihood", likelihood=0.9999)
        likelihood.start(Calibration(calibration))
        # The rule judges the mean of the last few scores, so the excursion lasts a while.
        decisions = [likelihood.decide("a", excursion, i) for i in range(5)]
        severities.append(max(d.severity for d in decisions))
    assert severities[0] < 1.0 < severities[1] < severities[2] < severities[3]
