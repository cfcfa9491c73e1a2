"""The serving bundle: a detector with what serving it needs, saved and loaded together.

A topic is served by more than a detector: the calibration scores its threshold rules are
fitted on (pooled, and per series while the topic has few enough series), each series'
scaling (``window.normalise: per_series``), how many events it learnt from and, for a
retrained model, its shadow comparison. These are saved beside the detector's own files in
the same store version (``bundle.json`` and ``calibration.npz``, arrays only, read without
pickle), so whatever serves a version decides exactly as the process that trained it.

A version saved before bundles existed keeps these in the detector's ``training`` entry of
``metadata.json``; :meth:`ServingBundle.load` reads them from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.errors import ModelLoadError
from streamdet.detectors import load_detector
from streamdet.detectors.base import Detector
from streamdet.thresholds import Calibration

BUNDLE_FILE = "bundle.json"
CALIBRATION_FILE = "calibration.npz"
# Pooled calibration scores kept with a model (the newest, in stream order).
POOLED_SCORES = 50_000
# Per-series scores share this budget; a series whose share falls below
# MIN_SERIES_SCORES keeps none (a tail fit needs the scores), and the pooled ones serve it.
SERIES_BUDGET = 50_000
MIN_SERIES_SCORES = 100


def calibration_from_scores(scores: np.ndarray, counts: dict[str, int]) -> Calibration:
    """The calibration a model keeps: its training scores (in the order of ``counts``,
    series by series), pooled and per series within the budget.

    >>> cal = calibration_from_scores(np.arange(6.0), {"a": 4, "b": 2})
    >>> cal.pooled.tolist(), {k: v.tolist() for k, v in cal.by_series.items()}
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], {'a': [0.0, 1.0, 2.0, 3.0], 'b': [4.0, 5.0]})
    """
    values = np.asarray(scores, np.float64)
    bounds = np.cumsum([0, *counts.values()])
    share = SERIES_BUDGET // max(len(counts), 1)
    by_series: dict[str, np.ndarray] = {}
    if share >= MIN_SERIES_SCORES:
        for name, start, end in zip(counts, bounds[:-1], bounds[1:], strict=True):
            own = values[start:end]
            by_series[name] = own[np.isfinite(own)][-share:]
    pooled = values[np.isfinite(values)][-POOLED_SCORES:]
    return Calibration(pooled, by_series)


@dataclass
class ServingBundle:
    """A detector and what serving it needs (see the module's docstring)."""

    detector: Detector
    calibration: Calibration = field(default_factory=Calibration)
    series_scaling: dict[str, Any] | None = None
    training_events: int = 0
    version: str | None = None
    retraining: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def model_version(self) -> str | None:
        """The detector's own version (name and training time)."""
        return self.detector.training.get("model_version")

    @property
    def trained_at(self) -> str | None:
        return self.detector.training.get("trained_at")

    def save(self, folder: str | Path) -> Path:
        """Write the detector and the bundle's files into ``folder``."""
        target = self.detector.save(folder)
        pooled = np.zeros(0) if self.calibration.pooled is None else self.calibration.pooled
        series = list(self.calibration.by_series)
        own = [np.asarray(self.calibration.by_series[s], np.float64) for s in series]
        np.savez(
            target / CALIBRATION_FILE,
            pooled=np.asarray(pooled, np.float64),
            series_scores=np.concatenate(own) if own else np.zeros(0),
            series_lengths=np.array([len(o) for o in own], np.int64),
        )
        description = {
            "store_version": self.version,
            "training_events": self.training_events,
            "series_scaling": self.series_scaling,
            "calibration_series": series,
            "retraining": self.retraining,
        }
        (target / BUNDLE_FILE).write_text(json.dumps(description, indent=1, sort_keys=True))
        return target

    @classmethod
    def load(
        cls,
        folder: str | Path,
        expected_name: str | None = None,
        expected_input_shape: tuple[int, ...] | None = None,
        version: str | None = None,
    ) -> ServingBundle:
        """Load a bundle (or a detector saved without one, from its ``training`` entry)."""
        path = Path(folder)
        detector = load_detector(path, expected_name, expected_input_shape)
        if not (path / BUNDLE_FILE).is_file():
            return cls._from_training(detector, version)
        try:
            description = json.loads((path / BUNDLE_FILE).read_text())
            with np.load(path / CALIBRATION_FILE, allow_pickle=False) as stored:
                pooled = np.asarray(stored["pooled"], np.float64)
                scores = np.asarray(stored["series_scores"], np.float64)
                lengths = np.asarray(stored["series_lengths"], np.int64)
            names = list(description.get("calibration_series") or [])
            if len(names) != len(lengths) or int(lengths.sum()) != len(scores):
                raise ValueError("the per-series calibration does not match its series list")
            bounds = np.cumsum([0, *lengths.tolist()])
            by_series = {
                name: scores[a:b] for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
            }
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path}: unreadable serving bundle: {exc}") from exc
        return cls(
            detector,
            Calibration(pooled if len(pooled) else None, by_series),
            description.get("series_scaling"),
            int(description.get("training_events") or 0),
            version or description.get("store_version"),
            description.get("retraining"),
        )

    @classmethod
    def _from_training(cls, detector: Detector, version: str | None) -> ServingBundle:
        training = detector.training
        pooled = training.get("calibration_scores")
        by_series = training.get("calibration_by_series") or {}
        return cls(
            detector,
            Calibration(
                np.asarray(pooled, np.float64) if pooled else None,
                {name: np.asarray(v, np.float64) for name, v in by_series.items()},
            ),
            training.get("series_scaling"),
            int(training.get("training_events") or 0),
            version or training.get("store_version"),
            training.get("retraining"),
        )


def bundle_summary(folder: str | Path) -> dict[str, Any]:
    """``bundle.json`` of a stored version (or the older ``training`` entry), without
    loading the model: what ``streamdet models list`` shows."""
    path = Path(folder)
    try:
        if (path / BUNDLE_FILE).is_file():
            return dict(json.loads((path / BUNDLE_FILE).read_text()))
        meta = json.loads((path / "metadata.json").read_text())
        return dict(meta.get("training") or {})
    except (OSError, json.JSONDecodeError):
        return {}
