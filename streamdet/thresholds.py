"""Threshold rules: turning scores into decisions.

Pure numpy. Detectors use :func:`percentile_threshold` and :func:`top_percent_mean`;
the evaluation harness and the daemon use :class:`AnomalyLikelihood`, a streaming policy
that turns raw scores into the tail probability of their recent average under the
distribution of a rolling history (the idea behind Numenta's anomaly likelihood).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Self

import numpy as np

from streamdet.errors import InvalidInputError


def percentile_threshold(
    scores: np.ndarray, threshold_perc: float | np.ndarray, feature_wise: bool = False
) -> float | np.ndarray:
    """Percentile of ``scores``; per feature (last axis) when ``feature_wise`` or when
    ``threshold_perc`` holds one percentile per feature.

    >>> percentile_threshold(np.arange(101.0), 95)
    95.0
    >>> percentile_threshold(np.array([[0.0, 10.0], [1.0, 20.0]]), 100, feature_wise=True)
    array([ 1., 20.])
    >>> percentile_threshold(np.array([[0.0, 10.0], [1.0, 20.0]]), np.array([0, 100]))
    array([ 0., 20.])
    """
    perc = np.asarray(threshold_perc, dtype=np.float64)
    if perc.ndim > 1 or not np.all((perc >= 0.0) & (perc <= 100.0)):
        raise InvalidInputError(
            f"threshold_perc must be a number or one number per feature, each within "
            f"[0, 100]; got {threshold_perc}"
        )
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise InvalidInputError("cannot infer a threshold from zero scores")
    if perc.ndim == 1:
        if values.ndim < 2 or len(perc) != values.shape[-1]:
            raise InvalidInputError(
                f"threshold_perc has {len(perc)} values; it needs one per feature "
                f"({values.shape[-1] if values.ndim >= 2 else 'no feature axis'})"
            )
        flat = values.reshape(-1, values.shape[-1])
        return np.array([np.percentile(flat[:, k], p) for k, p in enumerate(perc)])
    if feature_wise:
        flat = values.reshape(-1, values.shape[-1])
        return np.percentile(flat, float(perc), axis=0)
    return float(np.percentile(values, float(perc)))


def top_percent_mean(feature_scores: np.ndarray, outlier_perc: float = 100.0) -> np.ndarray:
    """Score each instance by the mean of its top ``outlier_perc`` % feature scores.

    ``feature_scores`` has the instance on axis 0 and any shape after it.

    >>> top_percent_mean(np.array([[1.0, 2.0, 3.0, 10.0]]), outlier_perc=25)
    array([10.])
    >>> top_percent_mean(np.array([[1.0, 2.0, 3.0, 10.0]]))
    array([4.])
    """
    if not 0.0 < outlier_perc <= 100.0:
        raise InvalidInputError(f"outlier_perc must be within (0, 100]; got {outlier_perc}")
    flat = np.asarray(feature_scores).reshape(len(feature_scores), -1)
    n_top = max(1, math.ceil(flat.shape[1] * outlier_perc / 100.0))
    if n_top == flat.shape[1]:
        return flat.mean(axis=1)
    top = np.partition(flat, flat.shape[1] - n_top, axis=1)[:, -n_top:]
    return top.mean(axis=1)


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


class AnomalyLikelihood:
    """Streaming tail probability of recent scores against their rolling history.

    For each new raw score ``s`` the policy keeps the last ``history`` scores and the
    last ``short_window`` scores. Its output is the probability that the short-term mean
    is this high under a normal fit to the history, reported as ``1 - tail``: values near
    1 mean "rarely this high". Until ``learning_period`` scores have been seen it returns
    0.5, because the history is not yet worth trusting.

    ``log_scale`` fits the history in ``log1p`` space, which suits heavy-tailed
    reconstruction errors better than a plain normal.

    :meth:`update` is the streaming form (one score in, one probability out);
    :meth:`transform` runs a fresh copy over an array and gives the same values. After each
    update ``log_tail`` holds the natural log of ``1 - likelihood``, computed so that it
    keeps falling where the likelihood itself has rounded to 1.

    >>> policy = AnomalyLikelihood(history=50, short_window=1, learning_period=20)
    >>> out = policy.transform(np.r_[np.random.default_rng(0).normal(1, 0.1, 60), 5.0])
    >>> bool(out[-1] > 0.999), bool(out[5] == 0.5)
    (True, True)
    """

    def __init__(
        self,
        history: int = 2000,
        short_window: int = 5,
        learning_period: int = 200,
        min_std: float = 1e-3,
        log_scale: bool = True,
    ) -> None:
        if history < 2 or short_window < 1 or learning_period < 2:
            raise InvalidInputError(
                "AnomalyLikelihood needs history >= 2, short_window >= 1, learning_period >= 2"
            )
        self.history = history
        self.short_window = short_window
        self.learning_period = learning_period
        self.min_std = min_std
        self.log_scale = log_scale
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._history: deque[float] = deque()
        self._sum = 0.0
        self._sumsq = 0.0
        self._recent: deque[float] = deque(maxlen=self.short_window)
        self.seen = 0
        self.log_tail = math.log(0.5)

    def _prepare(self, score: float) -> float:
        if not math.isfinite(score):
            raise InvalidInputError(f"an anomaly score must be finite; got {score}")
        return math.log1p(max(score, 0.0)) if self.log_scale else score

    def seed(self, scores: np.ndarray) -> Self:
        """Start from ``scores`` of normal data (e.g. a new model's calibration scores):
        they fill the history, and count towards the learning period.

        >>> calm = np.random.default_rng(0).normal(1, 0.1, 300)
        >>> AnomalyLikelihood(history=300, short_window=1).seed(calm).update(5.0) > 0.999
        True
        """
        for score in np.asarray(scores, dtype=np.float64).ravel()[-self.history :]:
            value = self._prepare(float(score))
            self._history.append(value)
            self._sum += value
            self._sumsq += value * value
            self.seen += 1
        while len(self._history) > self.history:
            old = self._history.popleft()
            self._sum -= old
            self._sumsq -= old * old
        return self

    def update(self, score: float) -> float:
        """Take one raw score and return the likelihood that it is anomalous."""
        value = self._prepare(float(score))
        self._recent.append(value)
        self.seen += 1
        if self.seen > self.learning_period:
            mean = self._sum / len(self._history)
            var = max(self._sumsq / len(self._history) - mean * mean, 0.0)
            std = max(math.sqrt(var), self.min_std)
            recent_mean = sum(self._recent) / len(self._recent)
            z = (recent_mean - mean) / std
            likelihood = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
            self.log_tail = log_normal_tail(z)
        else:
            likelihood = 0.5
            self.log_tail = math.log(0.5)
        self._history.append(value)
        self._sum += value
        self._sumsq += value * value
        if len(self._history) > self.history:
            old = self._history.popleft()
            self._sum -= old
            self._sumsq -= old * old
        return likelihood

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Likelihoods for a whole array of raw scores, from a fresh state."""
        fresh = AnomalyLikelihood(
            self.history, self.short_window, self.learning_period, self.min_std, self.log_scale
        )
        return np.array([fresh.update(float(s)) for s in np.asarray(scores).ravel()])


class RisingEdge:
    """Pass a score only when it beats every score of the last ``window`` steps, else 0.

    A long excursion then reports its rising edge instead of one detection per step, which
    is what an operator wants from an alert (and what NAB rewards). It needs no threshold,
    so any threshold applied afterwards sees at most one detection per new maximum.

    >>> edge = RisingEdge(window=3)
    >>> [edge.update(s) for s in [1, 5, 4, 6, 2, 2, 2, 3]]
    [1.0, 5.0, 0.0, 6.0, 0.0, 0.0, 0.0, 3.0]
    """

    def __init__(self, window: int = 400) -> None:
        if window < 1:
            raise InvalidInputError(f"RisingEdge needs window >= 1; got {window}")
        self.window = window
        self._maxima: deque[tuple[int, float]] = deque()  # decreasing scores, with their step
        self._step = 0

    def update(self, score: float) -> float:
        while self._maxima and self._maxima[0][0] < self._step - self.window:
            self._maxima.popleft()
        is_new_max = not self._maxima or score > self._maxima[0][1]
        while self._maxima and self._maxima[-1][1] <= score:
            self._maxima.pop()
        self._maxima.append((self._step, float(score)))
        self._step += 1
        return float(score) if is_new_max else 0.0

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """The same over an array, from a fresh state."""
        fresh = RisingEdge(self.window)
        return np.array([fresh.update(float(s)) for s in np.asarray(scores).ravel()])


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


# The severity of an alarm on a tail of zero width (finite, so it sorts and serialises).
FLAT_TAIL_ALARM = 2.0


class Spot:
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

    min_peaks = 20

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

    def _prepare(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def fit(self, scores: np.ndarray) -> Self:
        """Calibrate on scores of normal data (at least 40)."""
        values = self._prepare(np.asarray(scores, dtype=np.float64).ravel())
        values = values[np.isfinite(values)]
        if len(values) < 2 * self.min_peaks:
            raise InvalidInputError(
                f"{type(self).__name__} needs at least {2 * self.min_peaks} finite calibration "
                f"scores; got {len(values)}"
            )
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
        if not math.isfinite(value):
            raise InvalidInputError(f"an anomaly score must be finite; got {value}")
        if value > self.threshold:
            return True
        self._seen += 1.0
        if value > self.initial and self._n_peaks:
            self._add_peak(value - self.initial)
            self._refit()
        return False

    def update(self, score: float) -> bool:
        """Take one score; True if it is an alarm."""
        return self._step(float(score))

    def _severity(self, value: float) -> float:
        span = self.threshold - self.initial
        if not math.isfinite(span) or span <= 0.0:
            # No tail to measure on (a flat calibration set): only "at most" or "beyond".
            return 0.0 if value <= self.threshold else FLAT_TAIL_ALARM
        return (value - self.initial) / span

    def severity(self, score: float) -> float:
        """Where ``score`` lies on the current tail, before :meth:`update` takes it: 0 at
        the tail's start, 1 at the alarm threshold. Comparable across series and models.

        >>> spot = Spot(risk=1e-3).fit(np.random.default_rng(1).normal(size=20_000))
        >>> spot.severity(spot.initial), spot.severity(spot.threshold)
        (0.0, 1.0)
        """
        return self._severity(float(score))

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """Alarms for a sequence of scores, from a copy of the calibrated state."""
        fresh = copy.deepcopy(self)
        return np.array([fresh.update(float(s)) for s in np.asarray(scores).ravel()], bool)


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

    def __init__(
        self, risk: float = 1e-4, level: float = 0.98, max_peaks: int = 2000, depth: int = 20
    ) -> None:
        super().__init__(risk, level, max_peaks)
        if depth < 1:
            raise InvalidInputError(f"depth must be at least 1; got {depth}")
        self.depth = depth
        self._recent: deque[float] = deque(maxlen=depth)
        self._alarm_run = 0

    def _prepare(self, scores: np.ndarray) -> np.ndarray:
        if len(scores) <= self.depth:
            raise InvalidInputError(
                f"DriftingSpot needs more than depth={self.depth} calibration scores"
            )
        local = np.convolve(scores, np.ones(self.depth) / self.depth, mode="valid")[:-1]
        self._recent = deque(scores[-self.depth :].tolist(), maxlen=self.depth)
        return scores[self.depth :] - local

    def update(self, score: float) -> bool:
        value = float(score)
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


class DynamicThreshold:
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

    def fit(self, scores: np.ndarray) -> Self:
        """Calibrate the floor and the smoothing on scores of normal data."""
        values = np.asarray(scores, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
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
        value = float(score)
        if not math.isfinite(value):
            raise InvalidInputError(f"an anomaly score must be finite; got {value}")
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
        span = self.threshold - self._tail.initial
        if not math.isfinite(span) or span <= 0.0:
            return 0.0 if smoothed <= self.threshold else FLAT_TAIL_ALARM
        return (smoothed - self._tail.initial) / span

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """Alarms for a sequence of scores, from a copy of the calibrated state."""
        fresh = copy.deepcopy(self)
        return np.array([fresh.update(float(s)) for s in np.asarray(scores).ravel()], bool)


__all__ = [
    "AnomalyLikelihood",
    "DriftingSpot",
    "DynamicThreshold",
    "RisingEdge",
    "Spot",
    "fit_generalised_pareto",
    "log_normal_tail",
    "percentile_threshold",
    "tail_quantile",
    "top_percent_mean",
]
