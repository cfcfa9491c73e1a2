"""``streamdet evaluate vae-lstm-nab``: the VAE-LSTM paper's 5 NAB series, own splits.

Protocol of the reference notebook: every sequence of ``window * n_windows`` consecutive
test points (stride 1) gets one score; a sequence is labelled anomalous when it covers a
labelled anomaly index. Point-adjusted metrics count a whole labelled segment as detected
once any sequence in it is.

The reported threshold is chosen WITHOUT test labels: a percentile of the scores on the
last ``validation_fraction`` of the training series (at least one sequence plus 200
points), which the model did not train on.
The oracle best-F1 threshold (from test labels) is reported beside it, as the reference
notebook does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.detectors import VAELSTMDetector
from streamdet.evaluation import plots
from streamdet.evaluation.data import dataset_dir
from streamdet.evaluation.metrics import (
    average_precision,
    best_f1_threshold,
    binary_report,
    point_adjust,
    roc_auc,
)
from streamdet.progress import ProgressFn, stderr_progress

SERIES = ("ambient_temp", "cpu_utilization", "ec2_request", "machine_temp", "nyc_taxi")

REFERENCE = {
    "source": "lin-shuyu/VAE-LSTM-for-anomaly-detection NAB notebook, machine_temp test "
    "segment 1, oracle threshold",
    "machine_temp_raw_f1": 0.6754,
    "machine_temp_point_adjusted_f1": 0.9813,
}


def load_series(path: Path) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Training series and the test segments with their anomaly indices."""
    # The object arrays (machine_temp's two test segments) need allow_pickle; the files are
    # the project's read-only shared benchmark data, never user input.
    data = np.load(path, allow_pickle=True)
    training = np.asarray(data["training"], dtype=np.float32)
    test, idx = data["test"], data["idx_anomaly_test"]
    if test.dtype == object:
        return training, [np.asarray(s, np.float32) for s in test], [np.asarray(i) for i in idx]
    return training, [np.asarray(test, np.float32)], [np.atleast_1d(np.asarray(idx))]


def sequence_labels(n_points: int, anomalies: np.ndarray, seq_len: int) -> np.ndarray:
    """1 for every sequence start whose ``seq_len`` points cover an anomaly index.

    >>> sequence_labels(10, np.array([5]), 3).tolist()
    [0, 0, 0, 1, 1, 1, 0, 0]
    """
    n_seq = n_points - seq_len + 1
    labels = np.zeros(n_seq, dtype=np.int8)
    for a in anomalies:
        labels[max(int(a) - seq_len + 1, 0) : min(int(a) + 1, n_seq)] = 1
    return labels


def run(
    data: str | Path | None,
    out: str | Path,
    *,
    series: tuple[str, ...] = SERIES,
    window: int = 48,
    n_windows: int = 12,
    epochs_vae: int = 20,
    epochs_lstm: int = 20,
    threshold_perc: float = 99.0,
    validation_fraction: float = 0.2,
    seed: int = 0,
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """Evaluate each series; write ``vae_lstm_nab.json`` and plots into ``out``."""
    folder = dataset_dir(data, "vae_lstm_nab")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in series:
        started = time.perf_counter()
        training, tests, anomalies = load_series(folder / f"{name}.npz")
        # The validation part must hold enough sequences for a percentile to mean anything.
        validation = max(int(len(training) * validation_fraction), window * n_windows + 200)
        split = len(training) - validation
        detector = VAELSTMDetector(
            window=window,
            n_windows=n_windows,
            epochs_vae=epochs_vae,
            epochs_lstm=epochs_lstm,
            # The series are already z-normalised with the training statistics.
            normalise=False,
            seed=seed,
        )
        progress(f"vae-lstm-nab {name}: training on {split} points")
        detector.fit(training[:split], progress=progress)
        detector.infer_threshold(training[split:], threshold_perc=threshold_perc)
        threshold = float(detector.threshold)
        segments = []
        for s, (test, idx) in enumerate(zip(tests, anomalies, strict=True), 1):
            scores = detector.score(test).instance_score
            labels = sequence_labels(len(test), idx, detector.seq_len)
            predicted = scores > threshold
            segment = {
                "segment": s,
                "points": len(test),
                "sequences": len(scores),
                "anomaly_indices": [int(i) for i in idx],
                "threshold_without_labels": {
                    "threshold": threshold,
                    "raw": binary_report(labels, predicted),
                    "point_adjusted": binary_report(labels, point_adjust(labels, predicted)),
                },
                "oracle_best_f1": {
                    "raw": best_f1_threshold(labels, scores),
                    "point_adjusted": best_f1_threshold(labels, scores, adjust=True),
                },
                "auc": roc_auc(labels, scores),
                "average_precision": average_precision(labels, scores),
            }
            segments.append(segment)
            stem = out_dir / f"{name}_segment{s}"
            plots.score_timeline(
                Path(f"{stem}_scores.png"),
                f"VAE-LSTM {name} test segment {s} (threshold from training data)",
                test[detector.seq_len - 1 :],
                scores,
                labels=labels,
                detections=predicted,
                threshold=threshold,
            )
            plots.roc_pr_curves(Path(f"{stem}_roc_pr.png"), f"{name} seg {s}", labels, scores)
        results[name] = {
            "training": detector.training,
            "segments": segments,
            "seconds": round(time.perf_counter() - started, 1),
        }
        first = segments[0]
        progress(
            f"vae-lstm-nab {name}: F1 raw {first['threshold_without_labels']['raw']['f1']:.3f}, "
            f"point-adjusted {first['threshold_without_labels']['point_adjusted']['f1']:.3f} "
            f"(oracle PA {first['oracle_best_f1']['point_adjusted']['f1']:.3f})"
        )
    summary = {
        "benchmark": "vae-lstm-nab",
        "detector": {
            "name": "vae_lstm",
            "window": window,
            "n_windows": n_windows,
            "epochs_vae": epochs_vae,
            "epochs_lstm": epochs_lstm,
            "seed": seed,
        },
        "threshold_rule": f"percentile {threshold_perc} of scores on the last "
        f"{validation_fraction:.0%} of the training series (no test labels)",
        "series": results,
        "reference": REFERENCE,
    }
    (out_dir / "vae_lstm_nab.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
