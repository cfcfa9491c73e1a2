"""Where a score becomes an alert: the topic's threshold policy, then the cooldown.

Pure logic (no Kafka, no Prometheus). State per series (likelihood histories, tail rules,
the time of the last alert) is bounded: the least recently seen series are forgotten first.

>>> from streamdet.config import ThresholdConfig
>>> policy = AlertPolicy(ThresholdConfig(), cooldown_ms=1000, max_series=2)
>>> [policy.decide("a", 1.0, True, ts) for ts in (0, 500, 1500)]
[True, False, True]
>>> policy.decide("b", 1.0, False, 0), policy.decide("c", 1.0, True, 0), len(policy)
(False, True, 2)
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Generic, TypeVar

import numpy as np

from streamdet.config import ThresholdConfig
from streamdet.errors import InvalidInputError
from streamdet.thresholds import AnomalyLikelihood, DriftingSpot, DynamicThreshold, Spot

Value = TypeVar("Value")
TailRule = Spot | DynamicThreshold

TAIL_POLICIES = ("spot", "dspot", "dynamic")


class BoundedMap(OrderedDict[str, Value], Generic[Value]):
    """A dict that forgets its least recently used keys beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: str, value: Value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def tail_rule(threshold: ThresholdConfig) -> TailRule:
    """An unfitted label-free rule for ``spot``, ``dspot`` or ``dynamic``.

    >>> type(tail_rule(ThresholdConfig(policy="dspot", drift_depth=5))).__name__
    'DriftingSpot'
    """
    if threshold.policy == "spot":
        return Spot(risk=threshold.risk, level=threshold.tail_level)
    if threshold.policy == "dspot":
        return DriftingSpot(
            risk=threshold.risk, level=threshold.tail_level, depth=threshold.drift_depth
        )
    if threshold.policy == "dynamic":
        return DynamicThreshold(risk=threshold.risk, history=threshold.history)
    raise InvalidInputError(f"{threshold.policy!r} is not one of {TAIL_POLICIES}")


class AlertPolicy:
    """Decides, per series, whether a scored window raises an alert.

    ``policy: detector`` trusts the detector's flag; ``policy: likelihood`` flags when the
    tail probability of the recent scores reaches ``likelihood``. ``spot``, ``dspot`` and
    ``dynamic`` start every series from the tail of the model's calibration scores (given
    by :meth:`calibrate` whenever a model starts serving) and then follow that series' own
    scores; with no calibration scores (a model saved before they were kept) a series learns
    from its first ``LEARNING_SCORES`` scores, raising no alert meanwhile.

    An alert is then held back if the series alerted less than ``cooldown_ms`` of event
    time before *or after* this window: one event stamped far in the future cannot silence
    a series for hours.
    """

    LEARNING_SCORES = 200

    def __init__(self, threshold: ThresholdConfig, cooldown_ms: int, max_series: int) -> None:
        self.threshold = threshold
        self.cooldown_ms = cooldown_ms
        self._likelihoods: BoundedMap[AnomalyLikelihood] = BoundedMap(max_series)
        self._rules: BoundedMap[TailRule] = BoundedMap(max_series)
        self._learning: BoundedMap[list[float]] = BoundedMap(max_series)
        self._last_alert: BoundedMap[int] = BoundedMap(max_series)
        self._template: TailRule | None = None
        self._series_calibration: dict[str, np.ndarray] = {}
        self._calibrated_for: object = None

    def __len__(self) -> int:
        return max(len(self._likelihoods), len(self._rules), len(self._last_alert))

    def calibrate(
        self,
        model: object,
        scores: np.ndarray | None,
        by_series: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Start serving ``model``: its calibration scores seed the series' tail rules.

        A series with its own calibration scores (``by_series``) starts from them, any other
        from the pooled ``scores``. Called for every scored batch; it only acts when the
        model changed, and then forgets the previous model's tails (another scale).
        """
        if model is self._calibrated_for or self.threshold.policy not in TAIL_POLICIES:
            return
        self._calibrated_for = model
        self._rules.clear()
        self._learning.clear()
        self._template = None
        self._series_calibration = {
            series: values
            for series, values in (by_series or {}).items()
            if len(values) >= 2 * Spot.min_peaks
        }
        if scores is not None and len(scores) >= 2 * Spot.min_peaks:
            self._template = tail_rule(self.threshold).fit(np.asarray(scores, np.float64))

    def threshold_for(self, series: str) -> float | None:
        """The series' current tail threshold (``spot``/``dspot``: in excess of the local
        mean for ``dspot``); None for the other policies or while it learns."""
        rule = self._rules.get(series)
        if rule is None:
            return None
        if isinstance(rule, DriftingSpot):
            return rule.threshold + rule.local_mean
        return rule.threshold

    def _tail_flag(self, series: str, score: float) -> bool:
        rule = self._rules.get(series)
        if rule is None and series in self._series_calibration:
            rule = tail_rule(self.threshold).fit(self._series_calibration[series])
        elif rule is None and self._template is not None:
            rule = copy.deepcopy(self._template)
        if rule is None:
            seen = self._learning.get(series) or []
            seen.append(score)
            if len(seen) < self.LEARNING_SCORES:
                self._learning.touch(series, seen)
                return False
            self._learning.pop(series, None)
            rule = tail_rule(self.threshold).fit(np.asarray(seen))
            self._rules.touch(series, rule)
            return False
        self._rules.touch(series, rule)
        return rule.update(score)

    def decide(self, series: str, score: float, detector_flag: bool, end_ts_ms: int) -> bool:
        """True if the window raises an alert (flagged by the policy, not held back by the
        cooldown)."""
        if not self._flag(series, score, detector_flag):
            return False
        last = self._last_alert.get(series)
        if last is not None and abs(end_ts_ms - last) < self.cooldown_ms:
            return False
        self._last_alert.touch(series, end_ts_ms)
        return True

    def _flag(self, series: str, score: float, detector_flag: bool) -> bool:
        if self.threshold.policy == "likelihood":
            tracker = self._likelihoods.get(series) or AnomalyLikelihood(
                history=self.threshold.history, log_scale=False
            )
            self._likelihoods.touch(series, tracker)
            flagged = tracker.update(score) >= self.threshold.likelihood
        elif self.threshold.policy in TAIL_POLICIES:
            flagged = self._tail_flag(series, score)
        else:
            flagged = detector_flag
        return flagged

    def forget(self, series: str) -> None:
        self._likelihoods.pop(series, None)
        self._rules.pop(series, None)
        self._learning.pop(series, None)
        self._last_alert.pop(series, None)
