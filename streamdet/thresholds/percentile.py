"""The percentile rule: a fixed threshold at a percentile of the calibration scores.

This is what a detector's ``infer_threshold`` does (alibi-detect's rule), as a rule of the
daemon: the threshold is the ``threshold_perc`` percentile of the model's calibration scores,
raised by ``margin_perc`` % of its magnitude. It is pooled over the topic's series and does
not follow the stream. The percentile helpers the detectors' ``infer_threshold`` and
instance scores use live here too.

>>> rule = PercentileRule.from_params(PercentileParams(threshold_perc=90)).fit(np.arange(101.0))
>>> rule.threshold, rule.decide(95.0).flagged, rule.decide(90.0).flagged
(90.0, True, False)
>>> rule.decide(70.0).severity  # the calibration median is 0, the threshold 1
0.5
"""

from __future__ import annotations

import math
from typing import Literal, Self

import numpy as np
from pydantic import Field

from streamdet.core.errors import InvalidInputError
from streamdet.thresholds.base import (
    SENSITIVITY_PERCENTILE,
    Decision,
    RuleParams,
    ThresholdRule,
    checked_score,
    finite_scores,
    register_rule,
    relative_severity,
)


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


class PercentileParams(RuleParams):
    """``percentile`` (the default; ``detector`` is its former name): alert when the score
    passes the ``threshold_perc`` percentile of the model's calibration scores, raised by
    ``margin_perc`` % of its magnitude."""

    sensitivity_knobs = ("threshold_perc",)
    sensitivity_values = SENSITIVITY_PERCENTILE

    policy: Literal["percentile"] = "percentile"
    threshold_perc: float = Field(default=99.0, ge=0, le=100)
    margin_perc: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="raise the threshold by this share (%) of its magnitude",
    )


@register_rule
class PercentileRule(ThresholdRule):
    name = "percentile"
    Params = PercentileParams
    per_series = False
    min_calibration = 10

    def __init__(self, threshold_perc: float = 99.0, margin_perc: float = 0.0) -> None:
        if not 0.0 <= threshold_perc <= 100.0 or margin_perc < 0.0:
            raise InvalidInputError(
                "threshold_perc must be within [0, 100] and margin_perc at least 0"
            )
        self.threshold_perc = threshold_perc
        self.margin = margin_perc / 100.0
        self.threshold = math.inf
        self.location = math.inf

    @classmethod
    def from_params(cls, params: PercentileParams) -> Self:
        return cls(params.threshold_perc, params.margin_perc)

    def fit(self, calibration: np.ndarray) -> Self:
        values = finite_scores(calibration, self.name, self.min_calibration)
        threshold = float(np.percentile(values, self.threshold_perc))
        # Scores just past the calibration's highest are the normal data's own tail: a margin
        # keeps them quiet without hiding scores that are clearly beyond it.
        self.threshold = threshold + self.margin * abs(threshold)
        self.location = float(np.median(values))
        return self

    def decide(self, score: float) -> Decision:
        value = checked_score(score)
        return Decision(
            flagged=value > self.threshold,
            severity=relative_severity(value, self.location, self.threshold),
            threshold=self.threshold,
            rule=self.name,
        )
