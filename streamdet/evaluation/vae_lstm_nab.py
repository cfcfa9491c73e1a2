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

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, stderr_progress
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
from streamdet.evaluation.thresholding import (
    compare_policies,
    described_rules,
    threshold_rules,
)
from streamdet.evaluation.thresholding import (
    policies as policy_names,
)

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


# The five series as NAB files, and the reference notebook's train split [start, end) of
# each: the points outside it are the test segments (machine_temp has one on each side).
RAW_FILES = {
    "ambient_temp": ("realKnownCause/ambient_temperature_system_failure.csv", (0, 3300)),
    "cpu_utilization": ("realKnownCause/cpu_utilization_asg_misconfiguration.csv", (0, 15500)),
    "ec2_request": ("realKnownCause/ec2_request_latency_system_failure.csv", (0, 2000)),
    "machine_temp": ("realKnownCause/machine_temperature_system_failure.csv", (5000, 15500)),
    "nyc_taxi": ("realKnownCause/nyc_taxi.csv", (0, 5500)),
}


def split_raw_series(
    values: np.ndarray, anomalies: np.ndarray, train_split: tuple[int, int]
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The notebook's pre-processing: z-normalise with the mean and std of the training
    part ``values[start:end]``; the parts before and after it are test segments, each with
    the anomaly indices that fall in it (re-based to the segment).

    >>> training, tests, idx = split_raw_series(np.arange(10.0), np.array([1, 8]), (3, 7))
    >>> [round(float(v), 2) for v in training], [len(t) for t in tests], [i.tolist() for i in idx]
    ([-1.34, -0.45, 0.45, 1.34], [3, 3], [[1], [1]])
    """
    start, end = train_split
    if not 0 <= start < end <= len(values):
        raise ValueError(f"train split {train_split} does not fit a series of {len(values)}")
    part = values[start:end]
    mean, std = float(part.mean()), float(part.std()) or 1.0
    normal = ((values - mean) / std).astype(np.float32)
    tests, indices = [], []
    for lo, hi in ((0, start), (end, len(values))):
        if hi - lo > 0:
            tests.append(normal[lo:hi])
            indices.append(np.asarray([a - lo for a in anomalies if lo <= a < hi], dtype=int))
    return normal[start:end], tests, indices


def load_raw_series(
    nab_root: Path, name: str
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """One of the five series built from a NAB-layout corpus (``data/<file>.csv`` and
    ``labels/combined_labels.json``), as :func:`load_series` returns the ``.npz`` files.

    Each labelled timestamp marks the point after it, as the notebook's files do.
    """
    if name not in RAW_FILES:
        raise ValueError(f"no raw NAB file known for {name!r}; known: {', '.join(RAW_FILES)}")
    key, train_split = RAW_FILES[name]
    path = Path(nab_root) / "data" / key
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    values = np.asarray([float(r["value"]) for r in rows], dtype=np.float64)
    stamps = [r["timestamp"] for r in rows]
    labels = json.loads((Path(nab_root) / "labels" / "combined_labels.json").read_text())
    position = {stamp: i for i, stamp in enumerate(stamps)}
    anomalies = []
    for label in labels.get(key, []):
        stamp = label.split(".")[0]
        if stamp not in position:
            raise ValueError(f"{path}: labelled timestamp {label} is not a row of the file")
        anomalies.append(position[stamp] + 1)
    return split_raw_series(values, np.asarray(anomalies), train_split)


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
    code_size: int = 6,
    raw: str | Path | None = None,
    epochs_vae: int = 20,
    epochs_lstm: int = 20,
    threshold_perc: float = 99.0,
    validation_fraction: float = 0.2,
    threshold_policy: str = "protocol",
    threshold_params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """Evaluate each series; write ``vae_lstm_nab.json`` and plots into ``out``.

    ``raw``: build the series from a NAB-layout corpus (the notebook's splits and labels)
    instead of reading the pre-processed ``.npz`` files. Every threshold policy is reported
    per segment (``protocol``: the ``threshold_perc`` percentile of the validation scores;
    the label-free ones calibrated on the same validation scores and streamed over the
    test segment); ``threshold_policy`` picks the ``headline`` and the plotted alarms.
    """
    if threshold_policy not in policy_names():
        raise InvalidInputError(
            f"unknown threshold policy {threshold_policy!r}; allowed: {policy_names()}"
        )
    folder = None if raw is not None else dataset_dir(data, "vae_lstm_nab")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in series:
        started = time.perf_counter()
        if raw is not None:
            training, tests, anomalies = load_raw_series(Path(raw), name)
        else:
            assert folder is not None
            training, tests, anomalies = load_series(folder / f"{name}.npz")
        # The validation part must hold enough sequences for a percentile to mean anything.
        validation = max(int(len(training) * validation_fraction), window * n_windows + 200)
        split = len(training) - validation
        detector = VAELSTMDetector(
            window=window,
            n_windows=n_windows,
            code_size=code_size,
            epochs_vae=epochs_vae,
            epochs_lstm=epochs_lstm,
            # The series are already z-normalised with the training statistics.
            normalise=False,
            seed=seed,
        )
        progress(f"vae-lstm-nab {name}: training on {split} points")
        detector.fit(training[:split], progress=progress)
        validation_scores = detector.score(training[split:]).instance_score
        detector.infer_threshold(training[split:], threshold_perc=threshold_perc)
        threshold = float(detector.threshold)
        test_scores: dict[str, np.ndarray] = {}
        segments = []
        for s, (test, idx) in enumerate(zip(tests, anomalies, strict=True), 1):
            scores = detector.score(test).instance_score
            labels = sequence_labels(len(test), idx, detector.seq_len)
            predicted = scores > threshold
            policies, alarms = compare_policies(
                labels,
                scores,
                validation_scores,
                predicted,
                rules=threshold_rules(threshold_params),
                adjust=True,
            )
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
                "policies": policies,
                "headline": {"policy": threshold_policy, **policies[threshold_policy]},
                "oracle_best_f1": {
                    "raw": best_f1_threshold(labels, scores),
                    "point_adjusted": best_f1_threshold(labels, scores, adjust=True),
                },
                "auc": roc_auc(labels, scores),
                "average_precision": average_precision(labels, scores),
            }
            segments.append(segment)
            test_scores[f"test segment {s}"] = scores
            stem = out_dir / f"{name}_segment{s}"
            plots.score_timeline(
                Path(f"{stem}_scores.png"),
                f"VAE-LSTM {name} test segment {s} (threshold from training data)",
                test[detector.seq_len - 1 :],
                scores,
                labels=labels,
                detections=alarms[threshold_policy],
                threshold=threshold,
            )
            plots.roc_pr_curves(Path(f"{stem}_roc_pr.png"), f"{name} seg {s}", labels, scores)
        # The reference README sets the threshold by eye from this histogram; here it is the
        # percentile line, drawn over the scores it came from and the test scores.
        plots.loss_distributions(
            out_dir / f"{name}_score_histogram.png",
            f"VAE-LSTM {name}: anomaly scores",
            {"validation (end of training series)": validation_scores, **test_scores},
            threshold,
        )
        results[name] = {
            "training": detector.training,
            "segments": segments,
            "seconds": round(time.perf_counter() - started, 1),
        }
        first = segments[0]["headline"]
        progress(
            f"vae-lstm-nab {name} ({threshold_policy}): F1 raw {first['f1']:.3f}, "
            f"point-adjusted {first['point_adjusted']['f1']:.3f} "
            f"(oracle PA {segments[0]['oracle_best_f1']['point_adjusted']['f1']:.3f})"
        )
    summary = {
        "benchmark": "vae-lstm-nab",
        "detector": {
            "name": "vae_lstm",
            "window": window,
            "n_windows": n_windows,
            "code_size": code_size,
            "data": "raw NAB CSVs: " + str(raw) if raw is not None else "pre-processed .npz",
            "epochs_vae": epochs_vae,
            "epochs_lstm": epochs_lstm,
            "seed": seed,
        },
        "threshold_rule": f"protocol: percentile {threshold_perc} of scores on the last "
        f"{validation_fraction:.0%} of the training series (no test labels)",
        "threshold_policy": threshold_policy,
        "threshold_rules": described_rules(threshold_params),
        "seed": seed,
        "series": results,
        "reference": REFERENCE,
    }
    (out_dir / "vae_lstm_nab.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
