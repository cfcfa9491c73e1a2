"""Where the benchmark data lives: ``--data``, else ``$STREAMDET_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from streamdet.core.errors import DataNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The benchmark data folder (never copied into the repository)."""
    env = os.environ.get("STREAMDET_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared" / "data", PROJECT_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DataNotFoundError(
        "benchmark data not found: set STREAMDET_DATA or place it at ../shared/data "
        f"(looked in: {', '.join(str(c) for c in candidates)})"
    )


def dataset_dir(explicit: str | Path | None, name: str) -> Path:
    """``explicit`` if given, else ``<data_root>/<name>``; it must exist."""
    path = Path(explicit) if explicit else data_root() / name
    if not path.is_dir():
        raise DataNotFoundError(f"{path} does not exist or is not a folder")
    return path


def outlier_batch(
    X: np.ndarray, y: np.ndarray, n_samples: int, perc_outlier: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random batch of ``n_samples`` with ``perc_outlier`` % outliers."""
    n_out = round(n_samples * perc_outlier / 100)
    idx = np.r_[
        rng.choice(np.flatnonzero(y == 0), n_samples - n_out, replace=False),
        rng.choice(np.flatnonzero(y == 1), n_out, replace=False),
    ]
    rng.shuffle(idx)
    return X[idx], y[idx]
