"""SPOT and DSPOT: peaks-over-threshold alarm rules (Siffer et al., KDD 2017).

A generalised Pareto law is fitted to the calibration scores above their ``tail_level``
quantile; the alarm threshold is the score a normal observation exceeds with probability
``risk``, the one parameter a user sets (the target false-alarm rate per scored window).
The tail keeps learning from the stream's own peaks; alarms never enter it.
"""

from __future__ import annotations

import math
from collections import deque
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


def fit_generalised_pareto(excesses: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (shape xi, scale sigma) of a generalised Pareto law for ``excesses``.

    Uses Grimshaw's reduction: for ``theta = xi / sigma`` the likelihood has a closed-form
    maximiser in xi, so only ``theta`` is searched (a coarse grid, then a finer one around
    its best point). The exponential law (xi = 0) competes on equal terms.

    >>> rng = np.random.default_rng(0)
    >>> xi, sigma = fit_generalised_pareto(rng.exponential(2.0, 5000))
    >>> abs(xi) < 0.05, abs(sigma - 2.0) < 0.1
    (True, True)
    """
    y = np.asarray(excesses, dtype=np.float64).ravel()
    y = y[np.isfinite(y) & (y >= 0)]
    if len(y) < 2 or float(y.max()) <= 0.0:
        raise InvalidInputError("a tail fit needs at least two positive excesses")
    n, mean, top = len(y), float(y.mean()), float(y.max())

    def profile(theta: np.ndarray) -> np.ndarray:
        xi = np.log1p(np.outer(theta, y)).mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = -n * np.log(xi / theta) - n * (1.0 + xi)
        return np.where(np.isfinite(value), value, -np.inf)

    # theta lives in (-1/max, inf); the grid is scale free (in units of 1/mean and 1/max).
    negative = -(1.0 - np.logspace(-8, -0.01, 60)) / top
    positive = np.logspace(-4, 4, 90) / mean
    grid = np.r_[negative, positive]
    values = profile(grid)
    best = int(np.argmax(values))
    low = grid[max(best - 1, 0)]
    high = grid[min(best + 1, len(grid) - 1)]
    fine = np.linspace(low, high, 64)
    fine = fine[(fine != 0.0) & (fine > -1.0 / top)]
    fine_values = profile(fine)
    exponential = -n * math.log(mean) - n
    if fine_values.size and float(fine_values.max()) > max(exponential, float(values[best])):
        theta = float(fine[int(np.argmax(fine_values))])
    elif float(values[best]) > exponential:
        theta = float(grid[best])
    else:
        return 0.0, mean
    xi = float(np.log1p(theta * y).mean())
    return xi, xi / theta


def tail_quantile(
    initial: float, xi: float, sigma: float, risk: float, n_seen: int, n_peaks: int
) -> float:
    """The score a normal observation exceeds with probability ``risk`` (SPOT's z_q).

    >>> round(tail_quantile(1.0, 0.0, 1.0, 0.001, 1000, 100), 4)  # 1 + ln(100)
    5.6052
    """
    ratio = risk * n_seen / max(n_peaks, 1)
    if abs(xi) < 1e-9:
        return initial - sigma * math.log(ratio)
    return initial + sigma / xi * (ratio ** (-xi) - 1.0)


class SpotParams(RuleParams):
    """``spot``: alert when the score passes the peaks-over-threshold tail (a generalised
    Pareto law fitted to the scores above their ``tail_level`` quantile), read at ``risk``."""

    policy: Literal["spot"] = "spot"
    risk: float = Field(
        default=1e-4, gt=0, lt=0.5, description="target false-alarm rate per scored window"
    )
    tail_level: float = Field(default=0.98, ge=0.5, lt=1, description="where the tail starts")


class DriftingSpotParams(RuleParams):
    """``dspot``: SPOT on the excess over the mean of the series' last ``drift_depth`` normal
    scores, so a slow drift of the scores is not an alarm."""

    policy: Literal["dspot"] = "dspot"
    risk: float = Field(
        default=1e-4, gt=0, lt=0.5, description="target false-alarm rate per scored window"
    )
    tail_level: float = Field(default=0.98, ge=0.5, lt=1, description="where the tail starts")
    drift_depth: int = Field(default=20, ge=1, description="scores in the local mean")


@register_rule
class Spot(ThresholdRule):
    """Streaming peaks-over-threshold alarm rule (SPOT, Siffer et al., KDD 2017).

    :meth:`fit` takes calibration scores of normal data: the scores above their ``level``
    quantile ``t`` are the *peaks*, a generalised Pareto law is fitted to ``peak - t`` and the
    alarm threshold is the score a normal observation exceeds with probability ``risk``, the
    one parameter a user sets (the target false-alarm rate per scored instance). Each
    :meth:`update` flags a score beyond the threshold; a score between ``t`` and the
    threshold is a new peak and refits the tail, so the threshold follows the stream. Alarms
    never enter the tail. At most ``max_peaks`` peaks are kept (the oldest go first, with
    their share of the observation count), so the state is bounded.

    ``level`` is lowered when the calibration set is small, so that at least 20 peaks (and
    at least twice ``risk`` of the data) are above ``t``.

    >>> rng = np.random.default_rng(1)
    >>> spot = Spot(risk=1e-3).fit(rng.normal(size=20_000))
    >>> 2.8 < spot.threshold < 3.4  # the normal law's 99.9 % quantile is 3.09
    True
    >>> [spot.update(s) for s in (0.5, 2.5, 9.0)]
    [False, False, True]
    """

    name = "spot"
    Params = SpotParams
    min_peaks = 20
    min_calibration = 2 * min_peaks

    def __init__(self, risk: float = 1e-4, level: float = 0.98, max_peaks: int = 2000) -> None:
        if not 0.0 < risk < 0.5:
            raise InvalidInputError(f"risk must be within (0, 0.5); got {risk}")
        if not 0.5 <= level < 1.0:
            raise InvalidInputError(f"level must be within [0.5, 1); got {level}")
        if max_peaks < self.min_peaks:
            raise InvalidInputError(f"max_peaks must be at least {self.min_peaks}")
        self.risk = risk
        self.level = level
        self.max_peaks = max_peaks
        self.threshold = math.inf
        self.initial = math.inf
        # A ring buffer of float32: one series' state stays a few kB however long it runs.
        self._peaks = np.zeros(0, np.float32)
        self._n_peaks = 0
        self._oldest = 0
        self._seen = 0.0
        self.fitted = False

    @classmethod
    def from_params(cls, params: SpotParams) -> Self:
        return cls(risk=params.risk, level=params.tail_level)

    def _prepare(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def fit(self, scores: np.ndarray) -> Self:
        """Calibrate on scores of normal data (at least 40)."""
        values = self._prepare(finite_scores(scores, self.name, self.min_calibration))
        level = min(self.level, 1.0 - self.min_peaks / len(values), 1.0 - 2.0 * self.risk)
        self.initial = float(np.quantile(values, level))
        peaks = values[values > self.initial] - self.initial
        self._seen = float(len(values))
        self.fitted = True
        if len(peaks) < 2:  # a flat calibration set: everything above it is an alarm
            self.threshold = float(values.max())
            self._n_peaks = 0
            return self
        kept = peaks[-self.max_peaks :]
        self._peaks = np.zeros(self.max_peaks, np.float32)
        self._peaks[: len(kept)] = kept
        self._n_peaks, self._oldest = len(kept), 0
        self._seen *= len(kept) / len(peaks)
        self._refit()
        return self

    def _refit(self) -> None:
        peaks = self._peaks[: self._n_peaks]
        xi, sigma = fit_generalised_pareto(peaks)
        if xi < 0.0:
            # A bounded tail fitted to a few dozen (often clustered) peaks puts the threshold
            # at the largest calibration score; scores of real models are not bounded there.
            # The exponential tail is the conservative choice.
            xi, sigma = 0.0, float(peaks.mean())
        self.threshold = tail_quantile(
            self.initial, xi, sigma, self.risk, int(self._seen), self._n_peaks
        )

    def _add_peak(self, excess: float) -> None:
        if self._n_peaks < self.max_peaks:
            self._peaks[self._n_peaks] = excess
            self._n_peaks += 1
            return
        # The oldest peak leaves with its share of the observations, keeping the tail's rate.
        self._seen -= self._seen / self._n_peaks
        self._peaks[self._oldest] = excess
        self._oldest = (self._oldest + 1) % self.max_peaks

    def _step(self, value: float) -> bool:
        if not self.fitted:
            raise InvalidInputError(f"{type(self).__name__}.fit must run before update")
        if value > self.threshold:
            return True
        self._seen += 1.0
        if value > self.initial and self._n_peaks:
            self._add_peak(value - self.initial)
            self._refit()
        return False

    def update(self, score: float) -> bool:
        """Take one score; True if it is an alarm."""
        return self._step(checked_score(score))

    def _severity(self, value: float) -> float:
        # With no tail to measure on (a flat calibration set): only "at most" or "beyond".
        return relative_severity(value, self.initial, self.threshold)

    @property
    def score_threshold(self) -> float:
        """The score that alarms now, on the detector's scale."""
        return self.threshold

    def decide(self, score: float) -> Decision:
        value = checked_score(score)
        severity, threshold = self.severity(value), self.score_threshold
        return Decision(self.update(value), severity, threshold, self.name)

    def severity(self, score: float) -> float:
        """Where ``score`` lies on the current tail, before :meth:`update` takes it: 0 at
        the tail's start, 1 at the alarm threshold. Comparable across series and models.

        >>> spot = Spot(risk=1e-3).fit(np.random.default_rng(1).normal(size=20_000))
        >>> spot.severity(spot.initial), spot.severity(spot.threshold)
        (0.0, 1.0)
        """
        return self._severity(float(score))


@register_rule
class DriftingSpot(Spot):
    """SPOT on each score minus the mean of the last ``depth`` normal scores (DSPOT).

    For scores whose level drifts (a slowly rising reconstruction error after a
    re-calibration), the tail is modelled on the local excess, so the drift itself is not
    an alarm. Alarms are not added to the local mean.

    >>> rng = np.random.default_rng(2)
    >>> calm = rng.normal(size=3000) * 0.1 + np.linspace(0, 5, 3000)
    >>> dspot = DriftingSpot(risk=1e-3, depth=20).fit(calm)
    >>> rising = 5 + rng.normal(size=600) * 0.1 + np.linspace(0, 1, 600)  # the drift goes on
    >>> int(dspot.flags(rising).sum()) <= 3, bool(dspot.flags(np.r_[rising, 50.0])[-1])
    (True, True)
    """

    name = "dspot"
    Params = DriftingSpotParams

    def __init__(
        self, risk: float = 1e-4, level: float = 0.98, max_peaks: int = 2000, depth: int = 20
    ) -> None:
        super().__init__(risk, level, max_peaks)
        if depth < 1:
            raise InvalidInputError(f"depth must be at least 1; got {depth}")
        self.depth = depth
        self._recent: deque[float] = deque(maxlen=depth)
        self._alarm_run = 0

    @classmethod
    def from_params(cls, params: DriftingSpotParams) -> Self:  # type: ignore[override]
        return cls(risk=params.risk, level=params.tail_level, depth=params.drift_depth)

    def _prepare(self, scores: np.ndarray) -> np.ndarray:
        if len(scores) <= self.depth:
            raise InvalidInputError(
                f"DriftingSpot needs more than depth={self.depth} calibration scores"
            )
        local = np.convolve(scores, np.ones(self.depth) / self.depth, mode="valid")[:-1]
        self._recent = deque(scores[-self.depth :].tolist(), maxlen=self.depth)
        return scores[self.depth :] - local

    def update(self, score: float) -> bool:
        value = checked_score(score)
        local = sum(self._recent) / len(self._recent)
        alarm = self._step(value - local)
        self._alarm_run = self._alarm_run + 1 if alarm else 0
        # Alarms stay out of the local mean, except when ``depth`` of them come in a row:
        # the level itself has moved, and a mean that never follows would alarm for ever.
        if not alarm or self._alarm_run >= self.depth:
            self._recent.append(value)
        return alarm

    @property
    def local_mean(self) -> float:
        return sum(self._recent) / len(self._recent)

    def severity(self, score: float) -> float:
        return self._severity(float(score) - self.local_mean)

    @property
    def score_threshold(self) -> float:
        return self.threshold + self.local_mean
