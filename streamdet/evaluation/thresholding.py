"""The daemon's label-free threshold policies, run over a benchmark's scores.

Every ``evaluate`` command scores a test set once and then asks each policy for its alarms:
``protocol`` is the benchmark's own published rule (a percentile, usually set with some
knowledge of the contamination); ``spot``, ``dspot``, ``dynamic`` and ``likelihood`` are the
policies a topic can run with (``threshold.policy``), calibrated on scores of normal data
only (never the test labels) and streamed over the test scores in their order, with
``risk`` (the target false-alarm rate) as their one parameter. ``likelihood`` alarms when
the anomaly likelihood reaches ``1 - risk``.

>>> rng = np.random.default_rng(0)
>>> normal, test = rng.normal(size=2000), np.r_[rng.normal(size=500), 9.0]
>>> flags = policy_flags("spot", normal, test, risk=1e-3)
>>> bool(flags[-1]), int(flags[:-1].sum()) <= 2
(True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamdet.config import ThresholdConfig
from streamdet.errors import InvalidInputError
from streamdet.evaluation.metrics import binary_report, point_adjust
from streamdet.pipeline.policy import TAIL_POLICIES, tail_rule
from streamdet.thresholds import AnomalyLikelihood

LABEL_FREE = (*TAIL_POLICIES, "likelihood")
POLICIES = ("protocol", *LABEL_FREE)
DEFAULT_RISK = 1e-3


def policy_flags(
    policy: str, calibration: np.ndarray, scores: np.ndarray, *, risk: float = DEFAULT_RISK
) -> np.ndarray:
    """Alarms of a label-free ``policy`` over ``scores``, calibrated on ``calibration``."""
    if policy in TAIL_POLICIES:
        rule = tail_rule(ThresholdConfig(policy=policy, risk=risk))  # type: ignore[arg-type]
        return rule.fit(np.asarray(calibration, np.float64)).flags(scores)
    if policy == "likelihood":
        history = np.asarray(calibration, np.float64).ravel()
        tracker = AnomalyLikelihood(
            history=max(len(history), 10), learning_period=min(len(history), 200)
        )
        likelihood = tracker.transform(np.r_[history, np.asarray(scores).ravel()])
        return likelihood[len(history) :] >= 1.0 - risk
    raise InvalidInputError(f"unknown label-free policy {policy!r}; allowed: {LABEL_FREE}")


def compare_policies(
    labels: np.ndarray,
    scores: np.ndarray,
    calibration: np.ndarray,
    protocol_flags: np.ndarray,
    *,
    risk: float = DEFAULT_RISK,
    adjust: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Precision, recall and F1 of every policy on the same scores (point-adjusted too when
    ``adjust``: a labelled segment counts as found when any of its points is), and each
    policy's alarms."""
    results: dict[str, dict[str, Any]] = {}
    alarms: dict[str, np.ndarray] = {}
    for policy in POLICIES:
        flags = (
            np.asarray(protocol_flags, bool)
            if policy == "protocol"
            else policy_flags(policy, calibration, scores, risk=risk)
        )
        report = binary_report(labels, flags)
        if adjust:
            report["point_adjusted"] = binary_report(labels, point_adjust(labels, flags))
        results[policy], alarms[policy] = report, flags
    return results, alarms


def headline(policies: dict[str, dict[str, Any]], chosen: str) -> dict[str, Any]:
    """The chosen policy's report, for a command's headline figures."""
    if chosen not in policies:
        raise InvalidInputError(f"unknown threshold policy {chosen!r}; allowed: {POLICIES}")
    return policies[chosen]


def add_policy_arguments(parser: Any, default_risk: float = DEFAULT_RISK) -> None:
    """``--threshold-policy`` and ``--risk`` for an ``evaluate`` sub-command."""
    parser.add_argument(
        "--threshold-policy",
        choices=POLICIES,
        default="protocol",
        help="which policy's alarms are the headline figures (all are reported)",
    )
    parser.add_argument(
        "--risk",
        type=float,
        default=default_risk,
        help="target false-alarm rate of the label-free policies",
    )
