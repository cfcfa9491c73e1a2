"""Where a score becomes an alert: the topic's threshold rule per series, then the cooldown.

This is the one decision path: the daemon, ``streamdet replay``, every ``evaluate`` command
and the retraining's shadow comparison all decide through :class:`DecisionPolicy`.

Pure logic (no Kafka, no Prometheus). State per series (rules, the time of the last alert) is
bounded: the least recently seen series are forgotten first.

>>> from streamdet.thresholds import rule_params
>>> policy = DecisionPolicy(rule_params({"policy": "percentile", "threshold_perc": 90}),
...                         cooldown_ms=1000, max_series=2)
>>> policy.start(Calibration(np.arange(101.0)))
>>> [policy.decide("a", 95.0, ts).alert for ts in (0, 500, 1500)]
[True, False, True]
>>> d = policy.decide("b", 50.0, 0); d.flagged, d.threshold, d.rule
(False, 90.0, 'percentile')
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from streamdet.core.bounded import ENTRY_BYTES, BoundedMap, approx_bytes
from streamdet.thresholds.base import RULES, Decision, RuleParams, ThresholdRule


@dataclass(frozen=True)
class Calibration:
    """Scores of normal data a model's rules are fitted on: pooled over the topic's series
    (in stream order), and each series' own where the model kept them."""

    pooled: np.ndarray | None = None
    by_series: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return (self.pooled is None or not len(self.pooled)) and not self.by_series


class Cooldown:
    """Holds an alert back if its series alerted less than ``cooldown_ms`` of event time
    before *or after* this window: one event stamped far in the future cannot silence a
    series for hours. The window that raised the last alert (``window``: its partition and
    end offset) is admitted again: it is being scored again after its partition was re-read
    from its last commit (an aborted alert transaction), and its alert must go out again,
    with the same id. Another window with the same end time is held back as usual.

    >>> cooldown = Cooldown(1000, max_series=10)
    >>> [cooldown.admit("a", ts) for ts in (0, 999, 1000, 5)]
    [True, False, True, False]
    >>> [cooldown.admit("b", 0, window) for window in ((0, 7), (0, 8), (0, 7))]
    [True, False, True]
    """

    def __init__(self, cooldown_ms: int, max_series: int) -> None:
        self.cooldown_ms = cooldown_ms
        self._last_alert: BoundedMap[tuple[int, tuple[int, int] | None]] = BoundedMap(max_series)

    def admit(self, series: str, end_ts_ms: int, window: tuple[int, int] | None = None) -> bool:
        last = self._last_alert.get(series)
        if last is not None:
            last_ts, last_window = last
            same_window = window is not None and window == last_window
            if not same_window and abs(end_ts_ms - last_ts) < self.cooldown_ms:
                return False
        self._last_alert.touch(series, (end_ts_ms, window))
        return True

    def forget(self, series: str) -> None:
        self._last_alert.pop(series, None)

    def __len__(self) -> int:
        return len(self._last_alert)


class DecisionPolicy:
    """Decides, per series, whether a scored window is flagged and whether it alerts.

    :meth:`start` is called when a model starts serving, with its calibration scores: each
    series' rule is fitted on the series' own scores where the model kept them (and the rule
    is per series), otherwise on the pooled scores. A series with neither (a model saved
    without calibration scores) learns from its first ``LEARNING_SCORES`` scores, raising no
    alert meanwhile. Then the one :class:`Cooldown` applies.
    """

    LEARNING_SCORES = 200

    def __init__(self, params: RuleParams, cooldown_ms: int, max_series: int) -> None:
        self.params = params
        self.rule_class: type[ThresholdRule] = RULES[params.policy]
        self.cooldown = Cooldown(cooldown_ms, max_series)
        self._rules: BoundedMap[ThresholdRule] = BoundedMap(max_series)
        self._learning: BoundedMap[list[float]] = BoundedMap(max_series)
        self._calibration = Calibration()
        self._template: ThresholdRule | None = None
        self._rule_bytes: int | None = None
        # series -> severity bar from operators' verdicts (the feedback book's live dict).
        self.severity_bars: Mapping[str, float] = {}

    @property
    def name(self) -> str:
        return self.rule_class.name

    def __len__(self) -> int:
        return max(len(self._rules), len(self.cooldown))

    def _new_rule(self) -> ThresholdRule:
        return self.rule_class.from_params(self.params)

    def start(self, calibration: Calibration) -> None:
        """A model starts serving: every series' rule starts again from its scores (another
        model scores on another scale)."""
        self._rules.clear()
        self._learning.clear()
        self._template = None
        self._rule_bytes = None
        minimum = self.rule_class.min_calibration
        own = calibration.by_series if self.rule_class.per_series else {}
        self._calibration = Calibration(
            calibration.pooled,
            {series: scores for series, scores in own.items() if len(scores) >= minimum},
        )
        pooled = calibration.pooled
        if pooled is not None and len(pooled) >= minimum:
            self._template = self._new_rule().fit(np.asarray(pooled, np.float64))

    def _rule_for(self, series: str) -> ThresholdRule | None:
        if not self.rule_class.per_series and self._template is not None:
            return self._template  # one rule fitted on the pooled scores serves every series
        rule = self._rules.get(series)
        if rule is None:
            own = self._calibration.by_series.get(series)
            if own is not None:
                rule = self._new_rule().fit(own)
            elif self._template is not None:
                rule = copy.deepcopy(self._template)
        if rule is not None:
            self._rules.touch(series, rule)
        return rule

    def judge(self, series: str, score: float) -> Decision:
        """The rule's decision for one score of ``series``, before the cooldown."""
        rule = self._rule_for(series)
        if rule is not None:
            return rule.decide(score)
        seen = self._learning.get(series) or []
        seen.append(float(score))
        if len(seen) < max(self.LEARNING_SCORES, self.rule_class.min_calibration):
            self._learning.touch(series, seen)
        else:
            self._learning.pop(series, None)
            self._rules.touch(series, self._new_rule().fit(np.asarray(seen)))
        return Decision(False, 0.0, math.nan, self.name)

    def decide(
        self,
        series: str,
        score: float,
        end_ts_ms: int,
        window: tuple[int, int] | None = None,
    ) -> Decision:
        """The window's decision: flagged by the rule, and alerting unless the series'
        severity bar (operators' false-alarm verdicts) or the cooldown holds it back
        (``window``, its partition and end offset, as :meth:`Cooldown.admit` takes it)."""
        decision = self.judge(series, score)
        if not decision.flagged:
            return decision
        if decision.severity < self.severity_bars.get(series, 1.0):
            return replace(decision, held_by_feedback=True)
        return decision.alerted(self.cooldown.admit(series, end_ts_ms, window))

    def forget(self, series: str) -> None:
        self._rules.pop(series, None)
        self._learning.pop(series, None)
        self.cooldown.forget(series)

    def state_bytes(self) -> int:
        """Memory the per-series state holds, estimated from one series' rule (the rules of
        a policy are all alike): rules, scores still being learnt from (counted full),
        cooldowns. O(1): the daemon asks per event when a topic has a byte budget."""
        if self._rules and self._rule_bytes is None:
            self._rule_bytes = approx_bytes(next(iter(self._rules.values()))) + ENTRY_BYTES
        learning = max(self.LEARNING_SCORES, self.rule_class.min_calibration) * 32
        return (
            len(self._rules) * (self._rule_bytes or 0)
            + len(self._learning) * (learning + ENTRY_BYTES)
            + len(self.cooldown) * ENTRY_BYTES
        )


def decide_series(
    params: RuleParams,
    calibration: Calibration,
    scores: np.ndarray,
    series: str = "series",
    timestamps_ms: np.ndarray | None = None,
    cooldown_ms: int = 0,
) -> list[Decision]:
    """The daemon's decisions for one series' scores in stream order, from a fresh policy:
    what ``evaluate`` and the retraining's shadow comparison use.

    >>> from streamdet.thresholds import rule_params
    >>> normal = np.random.default_rng(0).normal(size=2000)
    >>> out = decide_series(rule_params({"policy": "spot", "risk": 1e-3}), Calibration(normal),
    ...                     np.r_[normal[:200], 9.0])
    >>> out[-1].flagged, sum(d.flagged for d in out[:-1]) <= 2
    (True, True)
    """
    policy = DecisionPolicy(params, cooldown_ms, max_series=1)
    policy.start(calibration)
    values = np.asarray(scores, np.float64).ravel()
    times = np.zeros(len(values), np.int64) if timestamps_ms is None else timestamps_ms
    return [policy.decide(series, float(v), int(t)) for v, t in zip(values, times, strict=True)]
