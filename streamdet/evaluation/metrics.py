"""Classification metrics for anomaly scores, in plain numpy.

>>> y = np.array([0, 0, 1, 1]); s = np.array([0.1, 0.4, 0.35, 0.8])
>>> roc_auc(y, s)
0.75
>>> binary_report(y, s > 0.3)["recall"]
1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamdet.core.errors import InvalidInputError


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InvalidInputError(f"labels {y.shape} and scores {s.shape} differ in length")
    return y, s


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds (ties handled as one step)."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (0.5 for a score that tells nothing)."""
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and the threshold (``score >= t``) at each distinct score."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    predicted = distinct + 1
    precision = tps / predicted
    recall = tps / max(int(y.sum()), 1)
    return precision, recall, s[distinct]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve, as a step sum (no interpolation)."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_report(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Precision, recall, F1, accuracy and the confusion counts of 0/1 predictions."""
    y, p = _check(labels, predicted)
    p = p.astype(bool)
    tp = int((y & p).sum())
    fp = int((~y & p).sum())
    fn = int((y & ~p).sum())
    tn = int((~y & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / max(len(y), 1),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def label_segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive 1s as half-open (start, end) index pairs.

    >>> label_segments(np.array([0, 1, 1, 0, 1]))
    [(1, 3), (4, 5)]
    """
    y = np.r_[0, np.asarray(labels).astype(np.int8).ravel(), 0]
    edges = np.flatnonzero(np.diff(y))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def point_adjust(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mark a whole labelled segment detected when any point in it is (Xu et al., 2018).

    >>> point_adjust(np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 0, 1])).tolist()
    [0, 1, 1, 1, 1]
    """
    adjusted = np.asarray(predicted).astype(np.int8).copy()
    for start, end in label_segments(labels):
        if adjusted[start:end].any():
            adjusted[start:end] = 1
    return adjusted


def best_f1_threshold(
    labels: np.ndarray, scores: np.ndarray, adjust: bool = False, n_thresholds: int = 200
) -> dict[str, Any]:
    """The threshold among ``n_thresholds`` evenly spaced ones that maximises F1.

    This looks at the labels, so it is an oracle: report it beside, never instead of,
    a threshold chosen without test labels.
    """
    y, s = _check(labels, scores)
    best: dict[str, Any] = {"f1": -1.0}
    for threshold in np.linspace(s.min(), s.max(), n_thresholds):
        predicted = s > threshold
        if adjust:
            predicted = point_adjust(y, predicted).astype(bool)
        report = binary_report(y, predicted)
        if report["f1"] > best["f1"]:
            best = {**report, "threshold": float(threshold)}
    return best
