"""``streamdet evaluate tabular --npz FILE``: VAEGMM on any labelled table, with a baseline.

The file holds ``X`` (rows x features) and ``y`` (1 = anomaly). Half of the normal rows
(random) train the detector; the other half plus every anomaly are the test set. Reported:
AUROC, AUPRC, and F1 when the top ``contamination`` share of test rows is flagged, for
VAEGMM and for scikit-learn's IsolationForest on the very same split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.detectors import VAEGMMDetector
from streamdet.errors import InvalidInputError
from streamdet.evaluation import plots
from streamdet.evaluation.metrics import average_precision, binary_report, roc_auc
from streamdet.progress import ProgressFn, stderr_progress


def load_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data or "y" not in data:
            raise InvalidInputError(f"{path} must hold arrays 'X' and 'y'; has {list(data)}")
        X, y = np.asarray(data["X"], np.float32), np.asarray(data["y"]).astype(np.int8)
    if X.ndim != 2 or len(X) != len(y):
        raise InvalidInputError(f"{path}: X must be (rows, features) and y one label per row")
    if not np.isfinite(X).all():
        raise InvalidInputError(f"{path}: X contains NaN or inf")
    if not 0 < y.sum() < len(y):
        raise InvalidInputError(f"{path}: y needs both normal (0) and anomalous (1) rows")
    return X, y


def _report(y: np.ndarray, scores: np.ndarray, contamination: float) -> dict[str, Any]:
    threshold = float(np.quantile(scores, 1 - contamination))
    return {
        "auroc": roc_auc(y, scores),
        "auprc": average_precision(y, scores),
        "threshold_at_contamination": threshold,
        **binary_report(y, scores > threshold),
    }


def run(
    npz: str | Path,
    out: str | Path,
    *,
    epochs: int = 50,
    seed: int = 0,
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest

    X, y = load_table(npz)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(y == 0))
    train_idx = normal[: len(normal) // 2]
    test_idx = np.r_[normal[len(normal) // 2 :], np.flatnonzero(y == 1)]
    X_train, X_test, y_test = X[train_idx], X[test_idx], y[test_idx]
    contamination = float(y_test.mean())
    progress(
        f"tabular: {len(X_train)} training rows, {len(X_test)} test rows "
        f"({contamination:.1%} anomalous), {X.shape[1]} features"
    )
    started = time.perf_counter()
    detector = VAEGMMDetector.tuned(
        epochs=epochs, batch_size=min(256, max(32, len(X_train) // 20)), samples=5, seed=seed
    )
    detector.fit(X_train, progress=progress)
    vaegmm_scores = detector.score(X_test).instance_score
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(X_train)
    forest_scores = -forest.score_samples(X_test)
    results = {
        "benchmark": "tabular",
        "file": str(Path(npz).resolve()),
        "rows": len(X),
        "features": int(X.shape[1]),
        "contamination": contamination,
        "vaegmm": _report(y_test, vaegmm_scores, contamination),
        "isolation_forest": _report(y_test, forest_scores, contamination),
        "seconds": round(time.perf_counter() - started, 1),
    }
    plots.roc_pr_curves(out_dir / "tabular_vaegmm_roc_pr.png", "VAEGMM", y_test, vaegmm_scores)
    plots.confusion_and_histogram(
        out_dir / "tabular_vaegmm_confusion_scores.png",
        "VAEGMM",
        y_test,
        vaegmm_scores,
        results["vaegmm"]["threshold_at_contamination"],
    )
    plots.roc_pr_curves(
        out_dir / "tabular_iforest_roc_pr.png", "IsolationForest", y_test, forest_scores
    )
    (out_dir / "tabular.json").write_text(json.dumps(results, indent=2, default=float))
    return results
