"""Where a score becomes an alert: the topic's threshold policy, then the cooldown.

Pure logic (no Kafka, no Prometheus). State per series (likelihood histories, the time of
the last alert) is bounded: the least recently seen series are forgotten first.

>>> from streamdet.config import ThresholdConfig
>>> policy = AlertPolicy(ThresholdConfig(), cooldown_ms=1000, max_series=2)
>>> [policy.decide("a", 1.0, True, ts) for ts in (0, 500, 1500)]
[True, False, True]
>>> policy.decide("b", 1.0, False, 0), policy.decide("c", 1.0, True, 0), len(policy)
(False, True, 2)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from streamdet.config import ThresholdConfig
from streamdet.thresholds import AnomalyLikelihood

Value = TypeVar("Value")


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


class AlertPolicy:
    """Decides, per series, whether a scored window raises an alert.

    ``policy: detector`` trusts the detector's flag; ``policy: likelihood`` flags when the
    tail probability of the recent scores reaches ``likelihood``. An alert is then held back
    if the series alerted less than ``cooldown_ms`` of event time before *or after* this
    window: one event stamped far in the future cannot silence a series for hours.
    """

    def __init__(self, threshold: ThresholdConfig, cooldown_ms: int, max_series: int) -> None:
        self.threshold = threshold
        self.cooldown_ms = cooldown_ms
        self._likelihoods: BoundedMap[AnomalyLikelihood] = BoundedMap(max_series)
        self._last_alert: BoundedMap[int] = BoundedMap(max_series)

    def __len__(self) -> int:
        return max(len(self._likelihoods), len(self._last_alert))

    def decide(self, series: str, score: float, detector_flag: bool, end_ts_ms: int) -> bool:
        if self.threshold.policy == "likelihood":
            tracker = self._likelihoods.get(series) or AnomalyLikelihood(
                history=self.threshold.history, log_scale=False
            )
            self._likelihoods.touch(series, tracker)
            flagged = tracker.update(score) >= self.threshold.likelihood
        else:
            flagged = detector_flag
        if not flagged:
            return False
        last = self._last_alert.get(series)
        if last is not None and abs(end_ts_ms - last) < self.cooldown_ms:
            return False
        self._last_alert.touch(series, end_ts_ms)
        return True

    def forget(self, series: str) -> None:
        self._likelihoods.pop(series, None)
        self._last_alert.pop(series, None)
