"""ECG5000 under alibi-detect's published Seq2Seq protocol.

Train on the normal beats (class 1) of the 4,500-row file, set the threshold on 1,000
beats of that file of which 60 % are normal, and test on the 500-row file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.progress import ProgressFn, stderr_progress
from streamdet.detectors import OutlierSeq2Seq, Seq2SeqDetector
from streamdet.evaluation import plots
from streamdet.evaluation.data import dataset_dir, outlier_batch
from streamdet.evaluation.metrics import average_precision, roc_auc
from streamdet.evaluation.thresholding import (
    compare_policies,
    described_rules,
    headline,
    threshold_rules,
)

PUBLISHED = {
    "source": "alibi-detect Seq2Seq ECG5000 example",
    "f1": 0.964,
    "accuracy": 0.970,
    "auc": 0.9925,
}


def load_ecg5000(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_big, y_big, X_small, y_small): y is 1 for an outlier (any class but 1)."""
    big = np.loadtxt(folder / "ECG5000_TEST.txt", dtype=np.float32)
    small = np.loadtxt(folder / "ECG5000_TRAIN.txt", dtype=np.float32)
    return (
        big[:, 1:, None],
        (big[:, 0] != 1).astype(np.int8),
        small[:, 1:, None],
        (small[:, 0] != 1).astype(np.int8),
    )


def run(
    data: str | Path | None,
    out: str | Path,
    *,
    latent_dim: int = 40,
    epochs: int = 120,
    validation_fraction: float = 0.1,
    patience: int = 20,
    threshold_level: str = "instance",
    teacher_forcing: bool = False,
    page_defaults: bool = False,
    threshold_policy: str = "protocol",
    threshold_params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """Train, threshold and test; write ``ecg5000.json`` and plots into ``out``.

    With ``validation_fraction``, that share of the normal training beats is held out and
    the epoch with the lowest loss on them is kept (``patience``: stop early), so the
    number of epochs is chosen without labels. Every threshold policy is reported under
    ``policies`` (the label-free ones calibrated on the training beats' scores);
    ``threshold_policy`` picks the headline ``metrics``.

    ``page_defaults`` runs alibi-detect's documented usage instead of streamdet's settings:
    ``OutlierSeq2Seq(1, 140, threshold=None, latent_dim=100)``, ``fit`` with its defaults
    (20 epochs, batch 64, Adam 1e-3) and ``infer_threshold(X, threshold_perc=60)`` (over
    feature scores, as ``outlier_perc=100`` makes it on the page).
    """
    folder = dataset_dir(data, "ecg5000")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    X_big, y_big, X_test, y_test = load_ecg5000(folder)
    rng = np.random.default_rng(seed)
    X_train = X_big[y_big == 0]
    X_thr, y_thr = outlier_batch(X_big, y_big, 1000, 40, rng)
    progress(
        f"ecg5000: {len(X_train)} normal training beats, threshold batch {len(X_thr)} "
        f"({int(y_thr.sum())} outliers), test {len(X_test)} ({int(y_test.sum())} outliers)"
    )
    started = time.perf_counter()
    if page_defaults:
        detector = OutlierSeq2Seq(1, X_train.shape[1], threshold=None, latent_dim=100, seed=seed)
        training = detector.fit(X_train, verbose=False, progress=progress)
        detector.infer_threshold(X_thr, threshold_perc=60)
        threshold_level = "feature (page)"
    else:
        detector = Seq2SeqDetector(
            latent_dim=latent_dim,
            epochs=epochs,
            batch_size=32,
            teacher_forcing=teacher_forcing,
            validation_fraction=validation_fraction,
            patience=patience,
            seed=seed,
        )
        training = detector.fit(X_train, progress=progress)
        detector.infer_threshold(X_thr, threshold_perc=60, level=threshold_level)  # type: ignore[arg-type]
    prediction = detector.predict(X_test)["data"]
    scores = prediction["instance_score"]
    calibration = detector.predict(X_train)["data"]["instance_score"]
    policies, alarms = compare_policies(
        y_test,
        scores,
        calibration,
        prediction["is_outlier"],
        rules=threshold_rules(threshold_params),
    )
    report = headline(policies, threshold_policy)
    result = {
        "benchmark": "ecg5000",
        "protocol": "alibi-detect: train on normal beats of the 4,500-row file; threshold "
        "on 1,000 beats with 60 % normal (percentile 60); test on the 500-row file",
        "detector": {"name": detector.name, "params": detector.params},
        "threshold_level": threshold_level,
        "threshold": np.asarray(detector.threshold).tolist(),
        "threshold_policy": threshold_policy,
        "threshold_rules": described_rules(threshold_params),
        "policies": policies,
        "training": training,
        "metrics": {
            **report,
            "auc": roc_auc(y_test, scores),
            "average_precision": average_precision(y_test, scores),
        },
        "published": PUBLISHED,
        "seconds": round(time.perf_counter() - started, 1),
    }
    detector.save(out_dir / "model")
    (out_dir / "ecg5000.json").write_text(json.dumps(result, indent=2, default=float))
    plots.roc_pr_curves(out_dir / "ecg5000_roc_pr.png", "ECG5000 Seq2Seq", y_test, scores)
    if training.get("history"):
        plots.training_curves(
            out_dir / "ecg5000_training.png",
            "ECG5000 Seq2Seq",
            training["history"],
            kept_epoch=training.get("best_epoch"),
        )
    order = np.argsort(y_test, kind="stable")
    plots.score_timeline(
        out_dir / "ecg5000_scores.png",
        "ECG5000 test beats (normal first, then outliers): mean value and instance score",
        X_test[order].mean(axis=(1, 2)),
        scores[order],
        labels=y_test[order],
        detections=alarms[threshold_policy][order],
        threshold=0.0,
    )
    progress(f"ecg5000: wrote {out_dir / 'ecg5000.json'} and plots")
    return result
