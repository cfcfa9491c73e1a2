"""What an alert says about its window, in numbers a subscriber can act on (bounded in size).

For a window of a time series: the values observed and the values the model expected (its
reconstruction or forecast), the time steps and features that contributed most to the
score; for a row: each feature observed and expected, the top ones first; for an image: a
coarse map of where the reconstruction error sits. At most ``MAX_STEPS`` steps and
``MAX_FEATURES`` features are shown (the newest steps, the most anomalous features), so an
alert stays a few kilobytes whatever the topic's shape.

>>> values = np.zeros((4, 2)); values[2, 1] = 5.0
>>> scores = np.zeros((4, 2)); scores[2, 1] = 9.0
>>> out = explain("timeseries", values, scores, np.zeros((4, 2)), ("temp", "flow"))
>>> {k: out["top_steps"][0][k] for k in ("step", "feature", "observed", "expected")}
{'step': 2, 'feature': 'flow', 'observed': 5.0, 'expected': 0.0}
>>> [f["feature"] for f in out["top_features"]], out["top_features"][0]["share"]
(['flow', 'temp'], 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_STEPS = 128
MAX_FEATURES = 16
TOP_STEPS = 5
GRID = 8


def _number(value: float) -> float | None:
    """Six significant digits (an alert is read, not re-computed); None for NaN or inf."""
    value = float(value)
    return float(f"{value:.6g}") if np.isfinite(value) else None


def _numbers(array: np.ndarray) -> list[Any]:
    """:func:`_number` of every element, as nested lists, computed for the whole array at
    once (an alert carries hundreds of numbers; formatting each took most of its cost).

    >>> _numbers(np.array([[0.12345678, -1234567.0], [1e-30, np.nan]]))
    [[0.123457, -1234570.0], [1e-30, None]]
    """
    values = np.asarray(array, np.float64)
    finite = np.isfinite(values)
    safe = np.where(finite, values, 0.0)
    magnitude = np.floor(np.log10(np.abs(np.where(safe == 0.0, 1.0, safe))))
    decimals = 5 - magnitude
    # Powers of ten are exact doubles up to 1e22: the rounded quotient or product is then
    # the double nearest the six-digit decimal, and prints as one.
    exact = np.abs(decimals) <= 22
    with np.errstate(over="ignore", invalid="ignore"):
        up = 10.0 ** np.where(exact & (decimals >= 0), decimals, 0.0)
        down = 10.0 ** np.where(exact & (decimals < 0), -decimals, 0.0)
        rounded = np.where(decimals >= 0, np.round(safe * up) / up, np.round(safe / down) * down)
    if finite.all() and exact.all():
        return rounded.tolist()
    out = rounded.astype(object)
    out[~exact] = [_number(v) for v in safe[~exact]]
    out[~finite] = None
    return out.tolist()


def _shares(feature_scores: np.ndarray) -> np.ndarray:
    """Each cell's share of what lifts the window above its own median cell (cells scored
    infinite share it all; NaN cells have none)."""
    infinite = np.isposinf(feature_scores)
    if infinite.any():
        return infinite / float(infinite.sum())
    known = feature_scores[np.isfinite(feature_scores)]
    floor = float(known.min()) if known.size else 0.0
    finite = np.where(np.isfinite(feature_scores), feature_scores, floor)
    lift = np.clip(finite - np.median(finite), 0.0, None)
    total = float(lift.sum())
    return lift / total if total > 0 else np.zeros_like(lift)


def explain(
    kind: str,
    values: np.ndarray,
    feature_scores: np.ndarray,
    expected: np.ndarray | None,
    names: tuple[str, ...],
) -> dict[str, Any]:
    """The explanation of one alerted window (see the module's docstring). ``values`` and
    ``expected`` are in the topic's units, shaped like ``feature_scores`` (steps x features
    for a series, features for a row, height x width x channels for an image)."""
    scores = np.asarray(feature_scores, np.float64)
    if kind == "image":
        return _image(scores)
    if kind == "tabular":
        return _row(np.ravel(values), np.ravel(scores), expected, names)
    return _series(np.asarray(values, np.float64), scores, expected, names)


def _series(
    values: np.ndarray, scores: np.ndarray, expected: np.ndarray | None, names: tuple[str, ...]
) -> dict[str, Any]:
    steps, n_features = scores.shape
    shares = _shares(scores)
    by_feature = shares.sum(axis=0)
    shown = np.argsort(-by_feature, kind="stable")[:MAX_FEATURES]
    first = max(steps - MAX_STEPS, 0)
    expected_array = (
        None if expected is None else np.asarray(expected, np.float64).reshape(steps, -1)
    )
    flat_order = np.argsort(-scores, axis=None, kind="stable")[:TOP_STEPS]
    top_steps = []
    for cell in flat_order:
        step, feature = divmod(int(cell), n_features)
        top_steps.append(
            {
                "step": step,
                "steps_before_end": steps - 1 - step,
                "feature": names[feature],
                "score": _number(scores[step, feature]),
                "observed": _number(values[step, feature]),
                "expected": None
                if expected_array is None
                else _number(expected_array[step, feature]),
            }
        )
    return {
        "features": [names[k] for k in shown],
        "first_step": first,
        "observed": _numbers(values[first:, shown]),
        "expected": None if expected_array is None else _numbers(expected_array[first:, shown]),
        "top_steps": top_steps,
        "top_features": [{"feature": names[k], "share": _number(by_feature[k])} for k in shown],
        "error_map": None,
    }


def _row(
    values: np.ndarray, scores: np.ndarray, expected: np.ndarray | None, names: tuple[str, ...]
) -> dict[str, Any]:
    shares = _shares(scores)
    shown = np.argsort(-scores, kind="stable")[:MAX_FEATURES]
    expected_row = None if expected is None else np.ravel(expected)
    return {
        "features": [names[k] for k in shown],
        "first_step": 0,
        "observed": [_number(values[k]) for k in shown],
        "expected": None if expected_row is None else [_number(expected_row[k]) for k in shown],
        "top_steps": [],
        "top_features": [
            {
                "feature": names[k],
                "share": _number(shares[k]),
                "score": _number(scores[k]),
                "observed": _number(values[k]),
                "expected": None if expected_row is None else _number(expected_row[k]),
            }
            for k in shown
        ],
        "error_map": None,
    }


def _image(scores: np.ndarray) -> dict[str, Any]:
    """The reconstruction error averaged over channels and over a coarse grid (at most
    GRID x GRID cells), each cell's share of the total."""
    error = np.abs(scores).reshape(scores.shape[0], scores.shape[1], -1).mean(axis=-1)
    rows = np.array_split(np.arange(error.shape[0]), min(GRID, error.shape[0]))
    cols = np.array_split(np.arange(error.shape[1]), min(GRID, error.shape[1]))
    grid = np.array([[error[np.ix_(r, c)].mean() for c in cols] for r in rows])
    total = float(grid.sum())
    return {
        "features": None,
        "first_step": 0,
        "observed": None,
        "expected": None,
        "top_steps": [],
        "top_features": [],
        "error_map": _numbers(grid / total if total > 0 else grid),
    }
