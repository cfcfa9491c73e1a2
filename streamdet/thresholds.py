"""Threshold rules: turning scores into decisions.

Pure numpy. Detectors use :func:`percentile_threshold` and :func:`top_percent_mean`;
the evaluation harness and the daemon use :class:`AnomalyLikelihood`, a streaming policy
that turns raw scores into the tail probability of their recent average under the
distribution of a rolling history (the idea behind Numenta's anomaly likelihood).
"""

from __future__ import annotations

import math
from collections import deque

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
    :meth:`transform` runs a fresh copy over an array and gives the same values.

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

    def _prepare(self, score: float) -> float:
        if not math.isfinite(score):
            raise InvalidInputError(f"an anomaly score must be finite; got {score}")
        return math.log1p(max(score, 0.0)) if self.log_scale else score

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
            likelihood = 1.0 - 0.5 * math.erfc((recent_mean - mean) / std / math.sqrt(2.0))
        else:
            likelihood = 0.5
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


def log_likelihood(likelihood: np.ndarray | float) -> np.ndarray:
    """Spread likelihoods near 1 over [0, 1] on a log scale (0.5 -> ~0.03, 1-1e-5 -> 0.5).

    >>> round(float(log_likelihood(1 - 1e-5)), 3)
    0.5
    """
    value = np.clip(np.asarray(likelihood, dtype=np.float64), 0.0, 1.0)
    return np.log(1.0000000001 - value) / math.log(1e-10)


__all__ = [
    "AnomalyLikelihood",
    "RisingEdge",
    "log_likelihood",
    "percentile_threshold",
    "top_percent_mean",
]
