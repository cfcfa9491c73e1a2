"""Per-series normalisation: one model for series at very different scales.

A topic may carry a temperature near 20, a pressure near 1e5 and a flow near 1e-3. With
``window.normalise: per_series`` every series is standardised with its own mean and
standard deviation before the detector sees it: the statistics of the series' training
data (stored with the model, refitted at every retraining), or, for a series the model
was not trained on, its running statistics since the daemon first saw it. Pure numpy;
bounded to ``max_series`` series (least recently seen forgotten first).

>>> scaler = SeriesScaler(max_series=10)
>>> stats = scaler.fit({"flow": np.array([[1e-3], [3e-3]]), "pressure": np.array([[1e5], [3e5]])})
>>> scaler.transform("pressure", np.array([[3e5]])).ravel().tolist()
[1.0]
>>> for v in (10.0, 30.0):
...     scaler.observe("new", np.array([v]))
>>> scaler.transform("new", np.array([[30.0]])).ravel().tolist()  # running statistics
[1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamdet.core.bounded import ENTRY_BYTES, BoundedMap, approx_bytes

STORED_SERIES = 10_000


def _std_floor(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    # A constant series has no spread: a floor relative to its level keeps the division sane.
    return np.maximum(std, 1e-8 * np.maximum(np.abs(mean), 1.0))


class SeriesScaler:
    def __init__(self, max_series: int) -> None:
        self._fitted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # count, mean, sum of squared deviations (Welford), for series without fitted stats
        self._running: BoundedMap[tuple[int, np.ndarray, np.ndarray]] = BoundedMap(max_series)
        self._entry_bytes: int | None = None

    def fit(self, series: dict[str, np.ndarray]) -> dict[str, list[list[float]]]:
        """Statistics of each series' training array (T, F); returns them for the model."""
        self._fitted = {}
        for name, values in series.items():
            data = np.asarray(values, np.float64)
            mean = data.mean(axis=0)
            self._fitted[name] = (mean, _std_floor(mean, data.std(axis=0)))
        return self.export()

    def export(self) -> dict[str, list[list[float]]]:
        kept = list(self._fitted.items())[:STORED_SERIES]
        return {name: [mean.tolist(), std.tolist()] for name, (mean, std) in kept}

    def load(self, stored: dict[str, Any] | None) -> None:
        """Take the statistics a model was trained with (none: every series runs)."""
        self._fitted = {
            name: (np.asarray(mean, np.float64), np.asarray(std, np.float64))
            for name, (mean, std) in (stored or {}).items()
        }

    def observe(self, series: str, values: np.ndarray) -> None:
        """Update the running statistics of a series the model has no statistics for."""
        if series in self._fitted:
            return
        value = np.asarray(values, np.float64)
        count, mean, squares = self._running.get(series) or (
            0,
            np.zeros_like(value),
            np.zeros_like(value),
        )
        count += 1
        delta = value - mean
        mean = mean + delta / count
        squares = squares + delta * (value - mean)
        self._running.touch(series, (count, mean, squares))

    def statistics(self, series: str) -> tuple[np.ndarray, np.ndarray] | None:
        if series in self._fitted:
            return self._fitted[series]
        running = self._running.get(series)
        if running is None:
            return None
        count, mean, squares = running
        return mean, _std_floor(mean, np.sqrt(squares / max(count, 1)))

    def transform(self, series: str, values: np.ndarray) -> np.ndarray:
        """``values`` (T, F) of ``series`` in its own standard units (unchanged if unknown)."""
        stats = self.statistics(series)
        if stats is None:
            return np.asarray(values)
        mean, std = stats
        return ((np.asarray(values, np.float64) - mean) / std).astype(np.float32)

    def forget(self, series: str) -> None:
        self._running.pop(series, None)

    def state_bytes(self) -> int:
        """Memory of the running statistics of series the model does not know (one entry
        measured, once: they are all alike)."""
        if not self._running:
            return 0
        if self._entry_bytes is None:
            self._entry_bytes = approx_bytes(next(iter(self._running.values()))) + ENTRY_BYTES
        return len(self._running) * self._entry_bytes
