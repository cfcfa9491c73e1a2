"""The likelihood rule: the tail probability of the recent scores against their history.

For each new score the rule keeps the last ``history`` scores and the last ``short_window``
scores, fits a normal law to the history and asks how probable a short-term mean this high
is (the idea behind Numenta's anomaly likelihood). It flags when that tail probability falls
to ``risk``. The history is a NumPy ring (8 bytes a score), so a series costs
``history`` x 8 bytes.

>>> rule = AnomalyLikelihood(history=50, short_window=1, learning_period=20, risk=1e-3)
>>> out = rule.transform(np.r_[np.random.default_rng(0).normal(1, 0.1, 60), 5.0])
>>> bool(out[-1] > 0.999), bool(out[5] == 0.5)
(True, True)
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from streamdet.core.errors import InvalidInputError
from streamdet.thresholds.base import (
    Decision,
    RuleParams,
    ThresholdRule,
    checked_score,
    finite_scores,
    register_rule,
)


def log_normal_tail(z: float) -> float:
    """Natural log of P(N(0, 1) > z), finite however far out ``z`` lies.

    ``1 - likelihood`` is 0.0 in float64 beyond z ≈ 8.3, so every stronger excursion would
    look the same; beyond z = 5 the log tail comes from the Mills-ratio series instead,
    which keeps ranking them (relative error below 1e-3 there).

    >>> round(log_normal_tail(0.0), 6) == round(math.log(0.5), 6)
    True
    >>> abs(log_normal_tail(5.0 - 1e-9) - log_normal_tail(5.0)) < 1e-3
    True
    >>> log_normal_tail(40.0) < log_normal_tail(20.0) < log_normal_tail(9.0) < -40
    True
    """
    if z < 5.0:
        return math.log(0.5 * math.erfc(z / math.sqrt(2.0)))
    inverse_square = 1.0 / (z * z)
    series = 1.0 - inverse_square + 3.0 * inverse_square**2 - 15.0 * inverse_square**3
    return -0.5 * z * z - math.log(z * math.sqrt(2.0 * math.pi)) + math.log(series)


class LikelihoodParams(RuleParams):
    """``likelihood``: alert when the tail probability of the last ``short_window`` scores'
    mean, under a normal fit to the last ``history`` scores, falls to ``risk`` (the older
    setting ``likelihood: 0.9999`` is read as ``risk: 1.0e-4``)."""

    policy: Literal["likelihood"] = "likelihood"
    risk: float = Field(default=1e-4, gt=0, lt=0.5, description="the tail probability that alerts")
    history: int = Field(default=2000, ge=20, description="scores the normal fit is made on")
    # 10: Numenta's averaging window, and the best of 1/3/5/10 on NAB's artificial files
    # (docs/BENCHMARKS.md, "The likelihood rule's short window"); it was 5.
    short_window: int = Field(default=10, ge=1, description="recent scores averaged")
    log_scale: bool = Field(
        default=False, description="fit log1p(score) instead (heavy-tailed scores)"
    )

    @model_validator(mode="before")
    @classmethod
    def _likelihood_is_one_minus_risk(cls, data: Any) -> Any:
        if isinstance(data, dict) and "likelihood" in data:
            data = dict(data)
            likelihood = data.pop("likelihood")
            if "risk" in data:
                raise ValueError("give risk or likelihood (= 1 - risk), not both")
            if not isinstance(likelihood, int | float) or not 0.5 < likelihood < 1:
                raise ValueError(f"likelihood must be a number within (0.5, 1); got {likelihood!r}")
            data["risk"] = 1.0 - float(likelihood)
        return data


@register_rule
class AnomalyLikelihood(ThresholdRule):
    """Streaming tail probability of recent scores against their rolling history.

    :meth:`update` is the streaming form (one score in, its likelihood out: ``1 - tail``,
    near 1 means "rarely this high"); until ``learning_period`` scores have been seen it
    returns 0.5. After each update ``log_tail`` holds the natural log of the tail
    probability, computed so that it keeps falling where the likelihood has rounded to 1.
    :meth:`decide` flags when that tail reaches ``risk``; its severity is
    ``log_tail / log(risk)`` (1 at the threshold, unbounded above, so a 20-sigma excursion
    outranks a 9-sigma one).
    """

    name = "likelihood"
    Params = LikelihoodParams

    def __init__(
        self,
        history: int = 2000,
        short_window: int = 10,
        learning_period: int = 200,
        min_std: float = 1e-3,
        log_scale: bool = False,
        risk: float = 1e-4,
    ) -> None:
        if history < 2 or short_window < 1 or learning_period < 2:
            raise InvalidInputError(
                "AnomalyLikelihood needs history >= 2, short_window >= 1, learning_period >= 2"
            )
        if not 0.0 < risk < 0.5:
            raise InvalidInputError(f"risk must be within (0, 0.5); got {risk}")
        self.history = history
        self.short_window = short_window
        self.learning_period = learning_period
        self.min_std = min_std
        self.log_scale = log_scale
        self.risk = risk
        self._log_risk = math.log(risk)
        self._z_at_risk = -NormalDist().inv_cdf(risk)
        self.reset()

    @classmethod
    def from_params(cls, params: LikelihoodParams) -> Self:
        return cls(
            history=params.history,
            short_window=params.short_window,
            log_scale=params.log_scale,
            risk=params.risk,
        )

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._ring = np.zeros(self.history, np.float64)
        self._filled = 0
        self._next = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_resum = 0
        self._recent = np.zeros(self.short_window, np.float64)
        self._recent_count = 0
        self.seen = 0
        self.log_tail = math.log(0.5)

    def _prepare(self, score: float) -> float:
        value = checked_score(score)
        return math.log1p(max(value, 0.0)) if self.log_scale else value

    def _push_history(self, value: float) -> None:
        if self._filled == self.history:
            old = self._ring[self._next]
            self._sum -= old
            self._sumsq -= old * old
        else:
            self._filled += 1
        self._ring[self._next] = value
        self._next = (self._next + 1) % self.history
        self._sum += value
        self._sumsq += value * value
        self._since_resum += 1
        if self._since_resum >= self.history:
            # Running sums drift by rounding over millions of updates: start them afresh.
            kept = self._ring[: self._filled]
            self._sum, self._sumsq = float(kept.sum()), float(np.square(kept).sum())
            self._since_resum = 0

    def _moments(self) -> tuple[float, float]:
        mean = self._sum / self._filled
        var = max(self._sumsq / self._filled - mean * mean, 0.0)
        return mean, max(math.sqrt(var), self.min_std)

    def fit(self, calibration: np.ndarray) -> Self:
        """Start afresh from scores of normal data (e.g. a new model's calibration scores):
        they fill the history and count towards the learning period."""
        self.reset()
        return self.seed(finite_scores(calibration, self.name, self.min_calibration))

    def seed(self, scores: np.ndarray) -> Self:
        """Add ``scores`` of normal data to the history.

        >>> calm = np.random.default_rng(0).normal(1, 0.1, 300)
        >>> AnomalyLikelihood(history=300, short_window=1).seed(calm).update(5.0) > 0.999
        True
        """
        for score in np.asarray(scores, dtype=np.float64).ravel()[-self.history :]:
            self._push_history(self._prepare(float(score)))
            self.seen += 1
        return self

    def _needed_score(self) -> float:
        """The score that would flag now, on the detector's scale (NaN while learning)."""
        if self.seen + 1 <= self.learning_period or not self._filled:
            return math.nan
        mean, std = self._moments()
        needed_mean = mean + self._z_at_risk * std
        if self._recent_count < self.short_window:
            kept_sum, n = float(self._recent[: self._recent_count].sum()), self._recent_count + 1
        else:
            oldest = self._recent[self._recent_count % self.short_window]
            kept_sum, n = float(self._recent.sum() - oldest), self.short_window
        needed = needed_mean * n - kept_sum
        return math.expm1(needed) if self.log_scale else needed

    def update(self, score: float) -> float:
        """Take one raw score and return the likelihood that it is anomalous."""
        value = self._prepare(score)
        self._recent[self._recent_count % self.short_window] = value
        self._recent_count += 1
        self.seen += 1
        if self.seen > self.learning_period and self._filled:
            mean, std = self._moments()
            window = self._recent[: min(self._recent_count, self.short_window)]
            z = (float(window.mean()) - mean) / std
            likelihood = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
            self.log_tail = log_normal_tail(z)
        else:
            likelihood = 0.5
            self.log_tail = math.log(0.5)
        self._push_history(value)
        return likelihood

    def decide(self, score: float) -> Decision:
        threshold = self._needed_score()
        self.update(score)
        severity = self.log_tail / self._log_risk
        return Decision(
            flagged=severity >= 1.0, severity=severity, threshold=threshold, rule=self.name
        )

    @classmethod
    def severity_at(cls, params: RuleParams, other: RuleParams) -> float | None:
        """Every score enters the history whatever was decided, so a rule that differs only
        in ``risk`` flags where this one's severity reaches ``log(other risk) / log(risk)``.

        >>> mine = LikelihoodParams(risk=1e-4)
        >>> round(AnomalyLikelihood.severity_at(mine, LikelihoodParams(risk=1e-5)), 9)
        1.25
        >>> AnomalyLikelihood.severity_at(mine, LikelihoodParams(risk=1e-4, history=50)) is None
        True
        """
        assert isinstance(params, LikelihoodParams) and isinstance(other, LikelihoodParams)
        if params.model_copy(update={"risk": other.risk}) != other:
            return None
        return math.log(other.risk) / math.log(params.risk)

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Likelihoods for a whole array of raw scores, from a fresh state."""
        fresh = AnomalyLikelihood(
            self.history,
            self.short_window,
            self.learning_period,
            self.min_std,
            self.log_scale,
            self.risk,
        )
        return np.array([fresh.update(float(s)) for s in np.asarray(scores).ravel()])
