"""Threshold rules: how a detector's scores become decisions (one module per rule).

Every module of this package that registers a rule (``@register_rule``) is imported here, so
:data:`RULES` is complete and a new rule is one new module. The package is pure NumPy and
pydantic: the config and the CLI read it without importing TensorFlow.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pydantic import TypeAdapter

from streamdet.thresholds.base import RULES, Decision, RuleParams, ThresholdRule, register_rule
from streamdet.thresholds.likelihood import AnomalyLikelihood, log_normal_tail
from streamdet.thresholds.percentile import PercentileRule, percentile_threshold, top_percent_mean
from streamdet.thresholds.policy import Calibration, Cooldown, DecisionPolicy, decide_series
from streamdet.thresholds.spot import DriftingSpot, Spot, fit_generalised_pareto, tail_quantile

_INFRASTRUCTURE = {"base", "policy"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

DEFAULT_RULE = "percentile"


def rule_names() -> tuple[str, ...]:
    """The registered rules' names (the values of ``threshold.policy``), sorted."""
    return tuple(sorted(RULES))


def rule_params(values: dict[str, Any] | RuleParams | None = None) -> RuleParams:
    """Validated parameters of the rule ``values["policy"]`` names (default: percentile).

    >>> rule_params({"policy": "spot"}).risk
    0.0001
    """
    if isinstance(values, RuleParams):
        return values
    data = dict(values or {})
    name = data.setdefault("policy", DEFAULT_RULE)
    if name not in RULES:
        raise ValueError(f"unknown threshold policy {name!r}; allowed: {', '.join(rule_names())}")
    return TypeAdapter(RULES[name].Params).validate_python(data)


__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "AnomalyLikelihood",
    "Calibration",
    "Cooldown",
    "Decision",
    "DecisionPolicy",
    "DriftingSpot",
    "PercentileRule",
    "RuleParams",
    "Spot",
    "ThresholdRule",
    "decide_series",
    "fit_generalised_pareto",
    "log_normal_tail",
    "percentile_threshold",
    "register_rule",
    "rule_names",
    "rule_params",
    "tail_quantile",
    "top_percent_mean",
]
