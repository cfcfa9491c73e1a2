"""Plain helpers shared by tests (no fixtures, so any scope can call them)."""

from __future__ import annotations

import numpy as np


def make_series(
    n: int = 3000, n_features: int = 2, seed: int = 0, anomalies: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """A seasonal multi-feature series with labelled injected anomalies.

    The anomalies cycle through a spike, a level shift and a frequency change; each
    labels exactly the steps it altered.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float32)
    series = np.stack(
        [
            np.sin(2 * np.pi * t / (25 + 7 * f)) + 0.05 * rng.standard_normal(n)
            for f in range(n_features)
        ],
        axis=1,
    ).astype(np.float32)
    labels = np.zeros(n, dtype=np.int8)
    for k, start in enumerate(anomalies):
        kind = k % 3
        if kind == 0:
            series[start : start + 2, 0] += 4.0
            labels[start : start + 2] = 1
            continue
        if kind == 1:
            series[start : start + 15, -1] += 2.0
        else:
            seg = np.arange(15, dtype=np.float32)
            series[start : start + 15, 0] = np.sin(2 * np.pi * seg / 5)
        labels[start : start + 15] = 1
    return series, labels
