"""The dynamic rule: telemanom's non-parametric threshold over the recent smoothed scores.

Never below the SPOT threshold for the same ``risk``, so ``risk`` bounds the false-alarm
rate as it does there (Hundman et al., KDD 2018).
"""

from __future__ import annotations

import math
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
from streamdet.thresholds.spot import Spot


class DynamicParams(RuleParams):
    """``dynamic``: alert when the smoothed score passes telemanom's non-parametric threshold
    over the last ``history`` smoothed scores, never below ``spot``'s for ``risk``."""

    policy: Literal["dynamic"] = "dynamic"
    risk: float = Field(
        default=1e-4, gt=0, lt=0.5, description="target false-alarm rate per scored window"
    )
    history: int = Field(default=2000, ge=20, description="smoothed scores the threshold reads")


@register_rule
class DynamicThreshold(ThresholdRule):
    """A non-parametric threshold over the recent smoothed scores, after telemanom.

    Scores are smoothed (exponential moving average of ``span``); every ``refresh`` scores
    the threshold is re-chosen among ``mean + z * sd`` of the last ``history`` smoothed
    scores (z from 2 to 10 by 0.5) as the one that removes the largest share of the mean
    and spread while cutting off few points and few runs (Hundman et al., KDD 2018). It is
    never lower than the threshold :class:`Spot` fits on the calibration scores for ``risk``,
    so ``risk`` bounds the false-alarm rate as it does there.

    >>> rng = np.random.default_rng(3)
    >>> rule = DynamicThreshold(risk=1e-3, history=500).fit(np.abs(rng.normal(size=2000)))
    >>> stream = np.r_[np.abs(rng.normal(size=600)), 12.0, 12.0, 12.0]
    >>> flags = rule.flags(stream)
    >>> int(flags[:600].sum()) <= 3, bool(flags[-1])
    (True, True)
    """

    name = "dynamic"
    Params = DynamicParams
    min_calibration = Spot.min_calibration
    z_grid = np.arange(2.0, 10.01, 0.5)

    def __init__(
        self, risk: float = 1e-4, history: int = 2000, span: int = 5, refresh: int = 50
    ) -> None:
        if not 0.0 < risk < 0.5:
            raise InvalidInputError(f"risk must be within (0, 0.5); got {risk}")
        if history < 20 or span < 1 or refresh < 1:
            raise InvalidInputError("DynamicThreshold needs history >= 20, span >= 1, refresh >= 1")
        self.risk = risk
        self.history = history
        self.alpha = 2.0 / (span + 1.0)
        self.refresh = refresh
        self.threshold = math.inf
        self._chosen = math.inf
        self._tail: Spot | None = None
        self._smoothed = np.zeros(0, np.float32)  # ring buffer, as Spot's peaks
        self._filled = 0
        self._next = 0
        self._level: float | None = None
        self._since_refresh = 0
        self.fitted = False

    @classmethod
    def from_params(cls, params: DynamicParams) -> Self:
        return cls(risk=params.risk, history=params.history)

    def fit(self, scores: np.ndarray) -> Self:
        """Calibrate the floor and the smoothing on scores of normal data."""
        values = finite_scores(scores, self.name, self.min_calibration)
        # Far fewer than 1 / risk calibration scores: an empirical quantile would be their
        # maximum, so the floor is a SPOT tail, which keeps learning from the raw scores.
        self._tail = Spot(risk=self.risk).fit(values)
        self._smoothed = np.zeros(self.history, np.float32)
        self._filled, self._next = 0, 0
        self._level = None
        for value in values[-self.history :]:
            self._smooth(float(value))
        self._choose()
        self.fitted = True
        return self

    def _smooth(self, value: float) -> float:
        self._level = (
            value
            if self._level is None
            else (self.alpha * value + (1.0 - self.alpha) * self._level)
        )
        self._smoothed[self._next] = self._level
        self._next = (self._next + 1) % self.history
        self._filled = min(self._filled + 1, self.history)
        return self._level

    def _choose(self) -> None:
        # Oldest first: the run count below needs the time order.
        errors = np.roll(self._smoothed, -self._next)[self.history - self._filled :]
        errors = errors.astype(np.float64)
        mean, sd = float(errors.mean()), float(errors.std())
        best, best_value = mean + self.z_grid[-1] * sd, -math.inf
        for z in self.z_grid:
            epsilon = mean + z * sd
            above = errors > epsilon
            n_above = int(above.sum())
            if n_above == 0 or n_above == len(errors):
                continue
            below = errors[~above]
            runs = int(np.count_nonzero(np.diff(np.r_[0, above.astype(np.int8)]) == 1))
            gain = (mean - below.mean()) / max(abs(mean), 1e-12) + (sd - below.std()) / max(
                sd, 1e-12
            )
            value = gain / (runs**2 + n_above)
            if value > best_value:
                best, best_value = epsilon, value
        self._chosen = best
        self.threshold = max(best, self.floor)
        self._since_refresh = 0

    @property
    def floor(self) -> float:
        """The SPOT threshold for ``risk`` on the raw scores seen so far."""
        return self._tail.threshold if self._tail is not None else math.inf

    def update(self, score: float) -> bool:
        """Take one score; True if its smoothed value is beyond the current threshold."""
        if not self.fitted:
            raise InvalidInputError("DynamicThreshold.fit must run before update")
        value = checked_score(score)
        smoothed = self._smooth(value)
        assert self._tail is not None
        self._tail.update(value)
        self._since_refresh += 1
        if self._since_refresh >= self.refresh:
            self._choose()
        self.threshold = max(self._chosen, self.floor)
        return smoothed > self.threshold

    def severity(self, score: float) -> float:
        """The smoothed score :meth:`update` would compare, on the scale where the start of
        the floor's tail is 0 and the threshold 1 (before :meth:`update` takes it)."""
        assert self._tail is not None
        level = float(score) if self._level is None else self._level
        smoothed = self.alpha * float(score) + (1.0 - self.alpha) * level
        return relative_severity(smoothed, self._tail.initial, self.threshold)

    def decide(self, score: float) -> Decision:
        value = checked_score(score)
        level_before = value if self._level is None else self._level
        flagged = self.update(value)
        assert self._tail is not None and self._level is not None
        # The raw score whose smoothed value reaches the threshold now in force.
        needed = (self.threshold - (1.0 - self.alpha) * level_before) / self.alpha
        severity = relative_severity(self._level, self._tail.initial, self.threshold)
        return Decision(flagged, severity, needed, self.name)
