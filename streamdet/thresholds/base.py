"""The threshold-rule contract: fitted on calibration scores, then one decision per score.

A rule is per series and streaming (river's anomaly filters, Merlion's post-rules): it is
fitted on scores of normal data, then :meth:`ThresholdRule.decide` turns each new score into
a :class:`Decision` and may learn from it. Every rule declares a pydantic parameter model
(``Params``) whose ``policy`` field is the rule's name; :mod:`streamdet.config` builds the
topic's ``threshold`` section from the registry, so a new rule is one module in this package.

Pure numpy and pydantic: nothing here imports TensorFlow, Kafka or Prometheus.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from streamdet.core.errors import InvalidInputError

# The severity of a flagged score when the rule has no spread to measure on (a flat
# calibration set): finite, so it sorts and serialises.
FLAT_ALARM_SEVERITY = 2.0


@dataclass(frozen=True, slots=True)
class Decision:
    """What a threshold rule made of one score.

    ``severity`` is the score on the rule's own scale, where 1 is its threshold, so it
    compares across series, rules and models. ``threshold`` is the score (on the detector's
    scale) at which this window would have been flagged: what an alert reports. It is NaN
    while a series has nothing to judge against yet. ``alert`` is set by the policy: flagged
    and not held back by the cooldown (the cooldown spares the pager, it does not make the
    window normal).
    """

    flagged: bool
    severity: float
    threshold: float
    rule: str
    alert: bool = False
    # Flagged, but below the series' severity bar raised by operators' false-alarm verdicts:
    # no alert, and (the operator said it is normal) learnt by the next retraining.
    held_by_feedback: bool = False

    def alerted(self, alert: bool) -> Decision:
        return replace(self, alert=alert)


# ``threshold.sensitivity``: one word for how readily a topic pages, mapped onto the rule's
# own knob (``risk``, or the percentile rule's ``threshold_perc``). ``balanced`` is every
# rule's default; the other two map to NAB's reward-low-FP and reward-low-FN profiles, their
# risks chosen on NAB's artificial files only under the default likelihood rule
# (``python -m benchmarks.choose_sensitivity``; docs/BENCHMARKS.md, "Sensitivity presets").
SENSITIVITY_RISK: dict[str, float] = {
    "fewer_false_alarms": 3e-5,
    "balanced": 1e-4,
    "catch_everything": 1e-2,
}
# The percentile rule flags a share of its (in-sample) calibration scores: set by hand, one
# step each way, not measured on NAB.
SENSITIVITY_PERCENTILE: dict[str, float] = {
    "fewer_false_alarms": 99.9,
    "balanced": 99.0,
    "catch_everything": 95.0,
}


class RuleParams(BaseModel):
    """Base of every rule's parameters: frozen, unknown keys refused, ``policy`` names it.

    ``sensitivity`` (one of :data:`SENSITIVITY_RISK`) sets the rule's own knob instead of a
    number; giving both is refused, so a config never says two things.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str

    # The keys ``sensitivity`` stands for in this rule's parameters (the first is set).
    sensitivity_knobs: ClassVar[tuple[str, ...]] = ("risk",)
    sensitivity_values: ClassVar[dict[str, float]] = SENSITIVITY_RISK

    @model_validator(mode="before")
    @classmethod
    def _sensitivity_sets_the_knob(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "sensitivity" not in data:
            return data
        data = dict(data)
        level = data.pop("sensitivity")
        if level not in cls.sensitivity_values:
            raise ValueError(
                f"sensitivity must be one of {', '.join(cls.sensitivity_values)}; got {level!r}"
            )
        given = [knob for knob in cls.sensitivity_knobs if knob in data]
        if given:
            raise ValueError(f"give sensitivity or {given[0]}, not both")
        data[cls.sensitivity_knobs[0]] = cls.sensitivity_values[level]
        return data


class ThresholdRule(ABC):
    """One series' rule. Subclasses set ``name`` and ``Params`` and implement :meth:`fit`,
    :meth:`decide` and :meth:`from_params`.

    ``per_series``: the policy fits each series on its own calibration scores where the
    model kept them (a pooled threshold belongs to the noisiest series); False: one rule,
    fitted on the pooled scores, decides for every series (so its :meth:`decide` keeps no
    state). ``min_calibration``: the fewest scores :meth:`fit` takes.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[RuleParams]] = RuleParams
    per_series: ClassVar[bool] = True
    min_calibration: ClassVar[int] = 2

    @classmethod
    @abstractmethod
    def from_params(cls, params: Any) -> Self:
        """A new, unfitted rule for ``params`` (an instance of ``Params``)."""

    @abstractmethod
    def fit(self, calibration: np.ndarray) -> Self:
        """Calibrate on scores of normal data, in stream order."""

    @abstractmethod
    def decide(self, score: float) -> Decision:
        """Judge one score, then learn from it where the rule follows the stream."""

    def decide_all(self, scores: np.ndarray) -> list[Decision]:
        """Decisions for a sequence of scores, from a copy of the fitted state."""
        fresh = copy.deepcopy(self)
        return [fresh.decide(float(s)) for s in np.asarray(scores, np.float64).ravel()]

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """Flags for a sequence of scores, from a copy of the fitted state."""
        return np.array([d.flagged for d in self.decide_all(scores)], dtype=bool)

    @classmethod
    def severity_at(cls, params: RuleParams, other: RuleParams) -> float | None:
        """The severity, on the scale of this rule with ``params``, from which the same rule
        with ``other`` parameters flags, where the scale makes that exact (so one run's
        severities answer for another setting); None where it does not."""
        return 1.0 if params == other else None


def finite_scores(scores: np.ndarray, rule: str, minimum: int) -> np.ndarray:
    """The finite calibration scores, refusing fewer than ``minimum``."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if len(values) < minimum:
        raise InvalidInputError(
            f"threshold rule {rule!r} needs at least {minimum} finite calibration scores; "
            f"got {len(values)}"
        )
    return values


def checked_score(score: float) -> float:
    value = float(score)
    if not math.isfinite(value):
        raise InvalidInputError(f"an anomaly score must be finite; got {value}")
    return value


def relative_severity(value: float, start: float, threshold: float) -> float:
    """``value`` on the scale where ``start`` is 0 and ``threshold`` is 1.

    >>> relative_severity(3.0, 1.0, 5.0), relative_severity(9.0, 5.0, 5.0)
    (0.5, 2.0)
    """
    span = threshold - start
    if not math.isfinite(span) or span <= 0.0:
        return 0.0 if value <= threshold else FLAT_ALARM_SEVERITY
    return (value - start) / span


RULES: dict[str, type[ThresholdRule]] = {}


def register_rule(cls: type[ThresholdRule]) -> type[ThresholdRule]:
    """Class decorator: make a rule known to the config, the daemon, ``evaluate`` and the
    alert schema. Its ``Params`` must be a :class:`RuleParams` whose ``policy`` field is the
    literal ``name``."""
    if not cls.name or (cls.name in RULES and RULES[cls.name] is not cls):
        raise ValueError(f"threshold rule name {cls.name!r} is empty or already registered")
    field = cls.Params.model_fields.get("policy")
    if field is None or get_args(field.annotation) != (cls.name,):
        raise ValueError(
            f"{cls.__name__}.Params.policy must be Literal[{cls.name!r}] (the config's tag)"
        )
    RULES[cls.name] = cls
    return cls
