"""Generic checks every registered threshold rule passes (river's ``check_estimator``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from streamdet.config import load_config_text
from streamdet.io.sinks.alerts import alert_schema
from streamdet.thresholds import RULES, Decision, rule_names

CALIBRATION = np.random.default_rng(0).gamma(2.0, 0.5, size=3000)
NORMAL = np.random.default_rng(1).gamma(2.0, 0.5, size=2000)


@pytest.fixture(params=rule_names())
def rule_class(request):
    return RULES[request.param]


def test_defaults_build_a_rule_the_config_accepts(rule_class):
    params = rule_class.Params()
    assert params.policy == rule_class.name
    rule_class.from_params(params)
    topic = f"{{name: t, detector: {{name: seq2seq}}, threshold: {{policy: {rule_class.name}}}}}"
    config = load_config_text(f"topics: [{topic}]", environ={})
    assert config.topics[0].threshold == params
    assert rule_class.name in alert_schema()["properties"]["rule"]["enum"]


def test_decisions_are_typed_consistent_and_repeatable(rule_class):
    rule = rule_class.from_params(rule_class.Params()).fit(CALIBRATION)
    fitted = copy.deepcopy(rule)
    decisions = rule.decide_all(np.r_[NORMAL, 1e6])
    assert decisions == rule.decide_all(np.r_[NORMAL, 1e6])  # decide_all works on a copy
    assert fitted.decide_all(NORMAL[:50]) == rule.decide_all(NORMAL[:50])
    for decision in decisions:
        assert isinstance(decision, Decision) and decision.rule == rule_class.name
        assert isinstance(decision.flagged, bool) and not decision.alert
        assert np.isfinite(decision.severity)
        # Severity 1 is the rule's threshold: a flag is at or beyond it.
        assert not decision.flagged or decision.severity >= 1.0 - 1e-9
    assert decisions[-1].flagged and decisions[-1].severity > 1.0
    assert sum(d.flagged for d in decisions[:-1]) <= 0.02 * len(NORMAL)


def test_a_rule_refuses_too_few_or_non_finite_calibration_scores(rule_class):
    rule = rule_class.from_params(rule_class.Params())
    with pytest.raises(ValueError, match="calibration scores"):
        rule.fit(
            np.full(rule_class.min_calibration - 1, 1.0)
            if rule_class.min_calibration > 1
            else np.array([np.nan])
        )
    fitted = rule_class.from_params(rule_class.Params()).fit(CALIBRATION)
    with pytest.raises(ValueError, match="finite"):
        fitted.decide(float("nan"))
