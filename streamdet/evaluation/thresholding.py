"""Every ``evaluate`` command's threshold figures, decided by the daemon's own code.

A benchmark scores its test set once; then each registered threshold rule decides over the
test scores in their order exactly as a topic with ``threshold.policy`` set to it would
(:func:`streamdet.thresholds.decide_series`: the same rule, fitted on calibration scores of
normal data only, never the test labels, with the same defaults as ``config.yaml``).
``protocol`` is the benchmark's own published rule (a percentile set with some knowledge of
the contamination), reported beside them.

>>> rng = np.random.default_rng(0)
>>> normal, test = rng.normal(size=2000), np.r_[rng.normal(size=500), 9.0]
>>> flags = policy_flags(rule_params({"policy": "spot", "risk": 1e-3}), normal, test)
>>> bool(flags[-1]), int(flags[:-1].sum()) <= 2
(True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.evaluation.metrics import binary_report, point_adjust
from streamdet.thresholds import RULES, Calibration, RuleParams, decide_series, rule_names
from streamdet.thresholds import rule_params as rule_params

PROTOCOL = "protocol"


def policies() -> tuple[str, ...]:
    """What ``--threshold-policy`` accepts: the benchmark's protocol and every rule."""
    return (PROTOCOL, *rule_names())


def threshold_rules(overrides: dict[str, Any] | None = None) -> dict[str, RuleParams]:
    """Every registered rule's parameters: its defaults (those of ``config.yaml``), with each
    of ``overrides`` applied to the rules that take it (``{"risk": 1e-3}`` sets the risk of
    every rule that has one). A key no rule takes is refused."""
    overrides = dict(overrides or {})
    known = {name for rule in RULES.values() for name in rule.Params.model_fields}
    unknown = sorted(set(overrides) - known - {"policy"})
    if unknown:
        raise InvalidInputError(
            f"no threshold rule takes {', '.join(unknown)}; the rules' parameters are "
            f"{', '.join(sorted(known - {'policy'}))}"
        )
    rules = {}
    for name in rule_names():
        fields = RULES[name].Params.model_fields
        rules[name] = rule_params(
            {"policy": name, **{k: v for k, v in overrides.items() if k in fields}}
        )
    return rules


def policy_flags(
    params: RuleParams,
    calibration: np.ndarray | Calibration,
    scores: np.ndarray,
    series: str = "series",
) -> np.ndarray:
    """The windows a topic with this rule flags among ``scores`` (one series, in order),
    its rule fitted on ``calibration`` (scores of normal data, or a model's calibration with
    its per-series scores, of which ``series`` picks its own as the daemon does)."""
    if not isinstance(calibration, Calibration):
        calibration = Calibration(np.asarray(calibration, np.float64))
    decisions = decide_series(params, calibration, scores, series)
    return np.array([d.flagged for d in decisions], dtype=bool)


def compare_policies(
    labels: np.ndarray,
    scores: np.ndarray,
    calibration: np.ndarray,
    protocol_flags: np.ndarray,
    *,
    rules: dict[str, RuleParams] | None = None,
    adjust: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Precision, recall and F1 of the protocol and of every rule on the same scores
    (point-adjusted too when ``adjust``: a labelled segment counts as found when any of its
    points is), and each one's alarms."""
    results: dict[str, dict[str, Any]] = {}
    alarms: dict[str, np.ndarray] = {PROTOCOL: np.asarray(protocol_flags, bool)}
    for name, params in (rules or threshold_rules()).items():
        alarms[name] = policy_flags(params, calibration, scores)
    for name, flags in alarms.items():
        report = binary_report(labels, flags)
        if adjust:
            report["point_adjusted"] = binary_report(labels, point_adjust(labels, flags))
        results[name] = report
    return results, alarms


def headline(reports: dict[str, dict[str, Any]], chosen: str) -> dict[str, Any]:
    """The chosen policy's report, for a command's headline figures."""
    if chosen not in reports:
        raise InvalidInputError(
            f"unknown threshold policy {chosen!r}; allowed: {', '.join(policies())}"
        )
    return reports[chosen]


def described_rules(overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rules' parameters as a result file records them."""
    return {name: params.model_dump() for name, params in threshold_rules(overrides).items()}
