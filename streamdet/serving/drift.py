"""How far a topic's recent scores have moved from the scores its model was calibrated on.

Pure numpy. The statistic is the two-sample Kolmogorov-Smirnov distance: the largest gap
between the empirical distribution functions of the last ``window`` scores and of the
model's calibration scores (kept with the model, see ``pipeline.models``). 0 means the
same distribution, 1 means no overlap at all. A stale model shows as a distance that stays
high; a short incident as a bump that goes away.

>>> rng = np.random.default_rng(0)
>>> drift = ScoreDrift(window=500, min_scores=100)
>>> drift.reference(object(), rng.normal(size=2000))
>>> for s in rng.normal(size=500): drift.observe(float(s))
>>> drift.statistic() < 0.1
True
>>> for s in rng.normal(3.0, 1.0, size=500): drift.observe(float(s))
>>> drift.statistic() > 0.8
True
"""

from __future__ import annotations

import numpy as np

from streamdet.core.errors import InvalidInputError


def ks_distance(sample: np.ndarray, reference: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance of two score arrays.

    >>> ks_distance(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    1.0
    """
    a, b = np.sort(np.asarray(sample, float)), np.sort(np.asarray(reference, float))
    if not len(a) or not len(b):
        raise InvalidInputError("a KS distance needs two non-empty samples")
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


class ScoreDrift:
    """The last ``window`` scores of a topic against its serving model's calibration scores.

    :meth:`reference` is called for every scored batch and acts only when the model
    changes: the new model's calibration scores become the reference and the recent scores
    are forgotten (they are on the old model's scale). :meth:`statistic` is None until
    ``min_scores`` scores have been seen, or when the model kept no calibration scores.
    """

    def __init__(self, window: int = 2000, min_scores: int = 200) -> None:
        if window < 1 or not 1 <= min_scores <= window:
            raise InvalidInputError("ScoreDrift needs window >= min_scores >= 1")
        self.window = window
        self.min_scores = min_scores
        self._recent = np.zeros(window, np.float64)
        self._count = 0
        self._reference: np.ndarray | None = None
        self._model: object = None

    def reference(self, model: object, scores: np.ndarray | None) -> None:
        if model is self._model:
            return
        self._model = model
        self._count = 0
        finite = None if scores is None else np.asarray(scores, float)
        self._reference = None if finite is None or not len(finite) else finite

    def observe(self, score: float) -> None:
        if np.isfinite(score):
            self._recent[self._count % self.window] = score
            self._count += 1

    def statistic(self) -> float | None:
        if self._reference is None or self._count < self.min_scores:
            return None
        return ks_distance(self._recent[: min(self._count, self.window)], self._reference)
