"""``streamdet evaluate tabular --npz FILE | --all DIR``: VAEGMM on labelled tables, beside
IsolationForest and the ensemble of both.

A file holds ``X`` (rows x features) and ``y`` (1 = anomaly). Half of the normal rows
(random) train the detector; the other half plus every anomaly are the test set. Reported:
AUROC, AUPRC, and precision/recall/F1 of every threshold policy (``protocol`` flags the top
``contamination`` share of test rows), for VAEGMM, for the isolation forest (scikit-learn's
trees, ``iforest``, 200 of them) and for the ``ensemble`` of both (each member's score a tail
probability against its training rows' scores, combined by ``min_p``), all on the very same
split; the single rows are the ensemble's own fitted members. ``--all`` runs every ``.npz``
of a folder over the same seeds and prints one table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, stderr_progress
from streamdet.detectors.ensemble import EnsembleDetector
from streamdet.evaluation import plots
from streamdet.evaluation.metrics import average_precision, roc_auc
from streamdet.evaluation.seeds import over_seeds
from streamdet.evaluation.thresholding import (
    compare_policies,
    described_rules,
    headline,
    threshold_rules,
)


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


def _report(
    y: np.ndarray,
    scores: np.ndarray,
    calibration: np.ndarray,
    contamination: float,
    threshold_policy: str,
    threshold_params: dict[str, Any] | None,
) -> dict[str, Any]:
    """AUROC, AUPRC and every threshold policy's figures; ``protocol`` flags the top
    ``contamination`` share of test rows (it knows the share of anomalies)."""
    threshold = float(np.quantile(scores, 1 - contamination))
    policies, _ = compare_policies(
        y, scores, calibration, scores > threshold, rules=threshold_rules(threshold_params)
    )
    return {
        "auroc": roc_auc(y, scores),
        "auprc": average_precision(y, scores),
        "threshold_at_contamination": threshold,
        **headline(policies, threshold_policy),
        "policies": policies,
    }


def run(
    npz: str | Path,
    out: str | Path,
    *,
    epochs: int = 50,
    threshold_policy: str = "protocol",
    threshold_params: dict[str, Any] | None = None,
    seed: int = 0,
    ensemble_trust: str = "equal",
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """One seed on one table; ``tabular.json`` and plots into ``out`` (``ensemble_trust``:
    the ensemble's ``trust``)."""
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
    # VAEGMM and the isolation forest fitted once, as the ensemble's members: each member's
    # own scores are the single-detector rows, the ensemble's combination the third.
    ensemble = EnsembleDetector(
        members=[
            {
                "name": "vaegmm",
                "params": {
                    "epochs": epochs,
                    "batch_size": min(256, max(32, len(X_train) // 20)),
                    "samples": 5,
                },
            },
            {"name": "iforest", "params": {"trees": 200}},
        ],
        trust=ensemble_trust,
        seed=seed,
    )
    ensemble.fit(X_train, progress=progress)
    vaegmm, isolation = ensemble.members
    vaegmm_scores = vaegmm.score(X_test).instance_score
    vaegmm_calibration = vaegmm.score(X_train).instance_score
    forest_scores = isolation.score(X_test).instance_score
    forest_calibration = isolation.score(X_train).instance_score
    ensemble_scores = ensemble.score(X_test).instance_score
    ensemble_calibration = ensemble.score(X_train).instance_score
    policy = {"threshold_policy": threshold_policy, "threshold_params": threshold_params}
    results = {
        "benchmark": "tabular",
        "file": str(Path(npz).resolve()),
        "rows": len(X),
        "features": int(X.shape[1]),
        "contamination": contamination,
        "seed": seed,
        **policy,
        "vaegmm": _report(y_test, vaegmm_scores, vaegmm_calibration, contamination, **policy),
        "isolation_forest": _report(
            y_test, forest_scores, forest_calibration, contamination, **policy
        ),
        "ensemble": _report(y_test, ensemble_scores, ensemble_calibration, contamination, **policy),
        # What the ensemble's rehearsal learnt: each member's weight and held-out false alarms.
        "ensemble_members": ensemble.training["members"],
        "ensemble_trust": ensemble.training["trust"],
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
    plots.roc_pr_curves(
        out_dir / "tabular_ensemble_roc_pr.png", "VAEGMM + IsolationForest", y_test, ensemble_scores
    )
    (out_dir / "tabular.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def run_all(
    directory: str | Path,
    out: str | Path,
    *,
    seeds: int = 3,
    first_seed: int = 0,
    epochs: int = 50,
    threshold_policy: str = "protocol",
    threshold_params: dict[str, Any] | None = None,
    ensemble_trust: str = "equal",
    progress: ProgressFn = stderr_progress,
    resume: bool = False,
) -> dict[str, Any]:
    """Every ``.npz`` table in ``directory``, each over the same seeds; one summary.

    Writes ``tabular_all.json`` (per table: the aggregate over seeds) and
    ``tabular_all_auroc.png`` (VAEGMM and IsolationForest AUROC per table, with the spread).
    """
    files = sorted(Path(directory).glob("*.npz"))
    if not files:
        raise InvalidInputError(f"{directory} holds no .npz table")
    out_dir = Path(out)
    tables: dict[str, Any] = {}
    for k, path in enumerate(files, 1):
        progress(f"tabular --all: table {k}/{len(files)}: {path.name}")
        tables[path.stem] = over_seeds(
            lambda seed, folder, path=path: run(
                path,
                folder,
                epochs=epochs,
                threshold_policy=threshold_policy,
                threshold_params=threshold_params,
                seed=seed,
                ensemble_trust=ensemble_trust,
                progress=progress,
            ),
            out_dir / path.stem,
            seeds=seeds,
            first_seed=first_seed,
            name="tabular",
            progress=progress,
            settings={
                "benchmark": "tabular",
                "table": path.name,
                "epochs": epochs,
                "threshold_policy": threshold_policy,
                "threshold_rules": described_rules(threshold_params),
            },
            resume=resume,
        )

    def wins(key: str) -> str:
        count = sum(
            t[key]["auroc"]["mean"] >= t["isolation_forest"]["auroc"]["mean"]
            for t in tables.values()
        )
        return f"{count}/{len(tables)} tables (mean AUROC)"

    summary = {
        "benchmark": "tabular --all",
        "directory": str(Path(directory).resolve()),
        "seeds": [first_seed + k for k in range(seeds)],
        "epochs": epochs,
        "threshold_policy": threshold_policy,
        "threshold_rules": described_rules(threshold_params),
        "vaegmm_at_least_isolation_forest": wins("vaegmm"),
        "ensemble_at_least_isolation_forest": wins("ensemble"),
        "tables": tables,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tabular_all.json").write_text(json.dumps(summary, indent=2, default=float))
    plots.grouped_bars(
        out_dir / "tabular_all_auroc.png",
        f"AUROC over {seeds} seed(s): VAEGMM, IsolationForest, both",
        list(tables),
        {
            name: (
                [t[key]["auroc"]["mean"] for t in tables.values()],
                [t[key]["auroc"]["sd"] for t in tables.values()],
            )
            for name, key in (
                ("VAEGMM", "vaegmm"),
                ("IsolationForest", "isolation_forest"),
                ("VAEGMM + IsolationForest", "ensemble"),
            )
        },
    )
    return summary
