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
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from streamdet.config import ThresholdConfig
from streamdet.errors import InvalidInputError
from streamdet.thresholds import (
    AnomalyLikelihood,
    DriftingSpot,
    DynamicThreshold,
    Spot,
)

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


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy made of one scored window.

    ``severity`` is the score on the policy's own scale, where 1 is its threshold (the
    likelihood level, the tail's alarm threshold; the ``detector`` policy gives its verdict,
    1 or 0), so it compares across series and models. ``flagged``: the policy judges the
    window anomalous; ``alert``: flagged and not held back by the cooldown (the cooldown
    spares the pager, it does not make the window normal).
    """

    alert: bool
    severity: float
    flagged: bool


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
        self._pooled_calibration: np.ndarray | None = None
        self._calibrated_for: object = None
        self._log_tail_at_level = math.log1p(-threshold.likelihood)

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
        if model is self._calibrated_for:
            return
        self._calibrated_for = model
        if self.threshold.policy == "likelihood":
            # Another model scores on another scale: each series' history starts again,
            # from the new model's calibration scores where it has them.
            self._likelihoods.clear()
            self._series_calibration = dict(by_series or {})
            self._pooled_calibration = None if scores is None else np.asarray(scores)
            return
        if self.threshold.policy not in TAIL_POLICIES:
            return
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

    def _tail_verdict(self, series: str, score: float) -> tuple[bool, float]:
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
                return False, 0.0
            self._learning.pop(series, None)
            rule = tail_rule(self.threshold).fit(np.asarray(seen))
            self._rules.touch(series, rule)
            return False, 0.0
        self._rules.touch(series, rule)
        severity = rule.severity(score)
        return rule.update(score), severity

    def assess(self, series: str, score: float, detector_flag: bool, end_ts_ms: int) -> Verdict:
        """The window's severity, and whether it raises an alert (flagged by the policy,
        not held back by the cooldown)."""
        flagged, severity = self._flag(series, score, detector_flag)
        if not flagged:
            return Verdict(False, severity, False)
        last = self._last_alert.get(series)
        if last is not None and abs(end_ts_ms - last) < self.cooldown_ms:
            return Verdict(False, severity, True)
        self._last_alert.touch(series, end_ts_ms)
        return Verdict(True, severity, True)

    def decide(self, series: str, score: float, detector_flag: bool, end_ts_ms: int) -> bool:
        """True if the window raises an alert (:meth:`assess` without the severity)."""
        return self.assess(series, score, detector_flag, end_ts_ms).alert

    def _flag(self, series: str, score: float, detector_flag: bool) -> tuple[bool, float]:
        if self.threshold.policy == "likelihood":
            tracker = self._likelihoods.get(series)
            if tracker is None:
                tracker = AnomalyLikelihood(history=self.threshold.history, log_scale=False)
                calibration = self._series_calibration.get(series, self._pooled_calibration)
                if calibration is not None:
                    tracker.seed(calibration)
            self._likelihoods.touch(series, tracker)
            likelihood = tracker.update(score)
            # Tail probabilities on a log scale: 1 at the configured level, and unbounded
            # above it, so a 20-sigma excursion outranks a 9-sigma one.
            severity = tracker.log_tail / self._log_tail_at_level
            return likelihood >= self.threshold.likelihood, severity
        if self.threshold.policy in TAIL_POLICIES:
            return self._tail_verdict(series, score)
        # Detectors place their threshold differently (Seq2Seq's scores are already relative
        # to it), so the detector's own verdict is the severity: 1 flagged, 0 not.
        return detector_flag, float(detector_flag)

    def forget(self, series: str) -> None:
        self._likelihoods.pop(series, None)
        self._rules.pop(series, None)
        self._learning.pop(series, None)
        self._last_alert.pop(series, None)
