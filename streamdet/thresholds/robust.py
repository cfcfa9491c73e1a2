"""The robust rule: a median and MAD band over the series' recent normal scores.

The threshold is ``median + z * 1.4826 * MAD`` of the last ``history`` scores the rule
judged normal, with ``z`` the standard normal's quantile for ``risk`` (the one parameter, as
for the other label-free rules). Median and median absolute deviation ignore the few
extreme scores that pull a mean and a standard deviation up, so the band stays tight after
an incident; flagged scores never enter the history. The band is recomputed every
``refresh`` scores (a median over the whole history each time would cost O(history)).

>>> rule = RobustRule.from_params(RobustParams(risk=1e-3))
>>> _ = rule.fit(np.random.default_rng(0).normal(size=3000))
>>> round(rule.threshold, 1), rule.decide(0.5).flagged, rule.decide(6.0).flagged
(3.1, False, True)
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal, Self

import numpy as np
from pydantic import Field

from streamdet.core.errors import InvalidInputError
from streamdet.thresholds.base import (
    Decision,
    RuleParams,
    ThresholdRule,
    checked_score,
    finite_scores,
    register_rule,
    relative_severity,
)

# MAD * 1.4826 estimates a normal law's standard deviation.
MAD_TO_SD = 1.4826


class RobustParams(RuleParams):
    """``robust``: alert when the score passes the median of the series' last ``history``
    normal scores by more than the normal quantile for ``risk`` times 1.4826 MAD."""

    policy: Literal["robust"] = "robust"
    risk: float = Field(
        default=1e-4, gt=0, lt=0.5, description="target false-alarm rate per scored window"
    )
    history: int = Field(default=2000, ge=20, description="recent normal scores kept")


@register_rule
class RobustRule(ThresholdRule):
    name = "robust"
    Params = RobustParams
    min_calibration = 20

    def __init__(self, risk: float = 1e-4, history: int = 2000, refresh: int = 50) -> None:
        if not 0.0 < risk < 0.5:
            raise InvalidInputError(f"risk must be within (0, 0.5); got {risk}")
        if history < 20 or refresh < 1:
            raise InvalidInputError("the robust rule needs history >= 20 and refresh >= 1")
        self.z = -NormalDist().inv_cdf(risk)
        self.history = history
        self.refresh = refresh
        self._ring = np.zeros(history, np.float64)
        self._filled = 0
        self._next = 0
        self._since_refresh = 0
        self.median = math.inf
        self.threshold = math.inf

    @classmethod
    def from_params(cls, params: RobustParams) -> Self:
        return cls(risk=params.risk, history=params.history)

    def _refresh(self) -> None:
        kept = self._ring[: self._filled]
        self.median = float(np.median(kept))
        spread = MAD_TO_SD * float(np.median(np.abs(kept - self.median)))
        # A flat history has no spread: a floor relative to its level keeps a band.
        spread = max(spread, 1e-9 * max(abs(self.median), 1.0))
        self.threshold = self.median + self.z * spread
        self._since_refresh = 0

    def _keep(self, value: float) -> None:
        self._ring[self._next] = value
        self._next = (self._next + 1) % self.history
        self._filled = min(self._filled + 1, self.history)
        self._since_refresh += 1
        if self._since_refresh >= self.refresh:
            self._refresh()

    def fit(self, calibration: np.ndarray) -> Self:
        values = finite_scores(calibration, self.name, self.min_calibration)[-self.history :]
        self._filled = len(values)
        self._ring[: self._filled] = values
        self._next = self._filled % self.history
        self._refresh()
        return self

    def decide(self, score: float) -> Decision:
        value = checked_score(score)
        threshold = self.threshold
        flagged = value > threshold
        severity = relative_severity(value, self.median, threshold)
        if not flagged:
            self._keep(value)
        return Decision(flagged, severity, threshold, self.name)
