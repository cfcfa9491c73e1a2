"""``streamdet evaluate nab``: any NAB-layout corpus, streamed file by file.

For each file the detector learns only from the probationary period (the first 15 %, at
most 750 rows). Every later row is scored causally: the raw score at row t comes from the
window ending at t, and the :class:`~streamdet.thresholds.AnomalyLikelihood` policy turns
raw scores into a tail probability using only the scores before and at t. :class:`RisingEdge`
then keeps a score only where it sets a new maximum over the last ``edge_window`` rows, so
one excursion costs one detection rather than one per row.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.detectors import DETECTORS, create_detector
from streamdet.evaluation import plots
from streamdet.evaluation.nab import (
    FileScores,
    NABFile,
    load_corpus,
    load_profiles,
    normalised_score,
)
from streamdet.progress import ProgressFn, stderr_progress
from streamdet.thresholds import AnomalyLikelihood, RisingEdge, log_likelihood
from streamdet.windows import sliding_windows

PUBLISHED_STANDARD = {
    "note": "NAB scoreboard, full 58-file corpus, standard profile",
    "ARTime": 74.9,
    "Numenta HTM": 70.1,
    "knncad": 58.0,
    "randomCutForest": 51.7,
    "random": 16.8,
}

# The window a detector without its own length (``seq_len``, ``window``...) scores.
DEFAULT_SEQ_LEN = 32
# Smaller, faster models than the library defaults (NAB files are a few thousand rows); a
# detector not named here runs with its own defaults.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "seq2seq": {"seq_len": 32, "latent_dim": 32, "epochs": 25, "batch_size": 32},
    "vae_lstm": {
        "window": 16,
        "n_windows": 4,
        "code_size": 6,
        "epochs_vae": 30,
        "epochs_lstm": 30,
        "batch_size": 32,
        "learning_rate_vae": 1e-3,
        "learning_rate_lstm": 1e-3,
    },
}


def _context(detector_name: str, params: dict[str, Any]) -> int:
    """Rows before the first scorable one."""
    return DETECTORS[detector_name].context_length(params, DEFAULT_SEQ_LEN)


def raw_scores(
    nab_file: NABFile, detector_name: str, params: dict[str, Any], seed: int
) -> np.ndarray:
    """Train on the probationary rows, then score every row from the window ending there."""
    values = nab_file.values.astype(np.float32)
    context = _context(detector_name, params)
    train = values[: nab_file.probation]
    detector = create_detector(detector_name, **params, seed=seed)
    detector.fit(train)
    windows = sliding_windows(values.reshape(len(values), -1), context)
    scores = detector.score(windows).instance_score
    raw = np.zeros(len(values))
    raw[context - 1 :] = scores
    # Before the first full window there is nothing to score: repeat the first score
    # so that the likelihood's history is not seeded with artificial zeros.
    raw[: context - 1] = scores[0]
    return raw


def run(
    data: str | Path,
    out: str | Path,
    *,
    detector: str = "seq2seq",
    params: dict[str, Any] | None = None,
    history: int = 2000,
    short_window: int = 5,
    edge_window: int = 400,
    log_scale: bool = False,
    seed: int = 0,
    windows_file: str = "combined_windows.json",
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """Score every file of the corpus at ``data``; write CSVs, JSON and plots into ``out``."""
    corpus = load_corpus(data, windows_file)
    profiles = load_profiles(Path(data) / "config" / "profiles.json")
    out_dir = Path(out)
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    settings = {**DEFAULT_PARAMS.get(detector, {}), **(params or {})}
    started = time.perf_counter()
    scored: list[FileScores] = []
    for n, nab_file in enumerate(corpus, 1):
        t0 = time.perf_counter()
        raw = raw_scores(nab_file, detector, settings, seed)
        policy = AnomalyLikelihood(
            history=history,
            short_window=short_window,
            learning_period=nab_file.probation,
            log_scale=log_scale,
        )
        anomaly = log_likelihood(policy.transform(raw))
        if edge_window > 0:
            anomaly = RisingEdge(edge_window).transform(anomaly)
        scored.append(FileScores(nab_file.key, anomaly, nab_file.windows, nab_file.probation))
        _write_csv(out_dir / "results" / nab_file.key.replace("/", "__"), nab_file, anomaly, raw)
        progress(
            f"nab [{n}/{len(corpus)}] {nab_file.key}: {len(nab_file.values)} rows, "
            f"{len(nab_file.windows)} window(s) ({time.perf_counter() - t0:.1f}s)"
        )
    results = {p.name: normalised_score(scored, p) for p in profiles}
    standard = results.get("standard")
    if standard is not None:
        for nab_file, file_scores in zip(corpus, scored, strict=True):
            _plot_file(out_dir / "plots", nab_file, file_scores, standard["threshold"])
    summary = {
        "benchmark": "nab",
        "corpus": str(Path(data).resolve()),
        "files": len(corpus),
        "windows": sum(len(f.windows) for f in corpus),
        "detector": {"name": detector, "params": settings, "seed": seed},
        "threshold_policy": {
            "name": "anomaly_likelihood",
            "history": history,
            "short_window": short_window,
            "learning_period": "probationary period of each file",
            "log_scale": log_scale,
            "output": "log_likelihood" + (", then RisingEdge" if edge_window > 0 else ""),
            "edge_window": edge_window,
        },
        "profiles": results,
        "published_standard": PUBLISHED_STANDARD,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "nab.json").write_text(json.dumps(summary, indent=2))
    progress(f"nab: wrote {out_dir / 'nab.json'}, per-file CSVs and plots")
    return summary


def _write_csv(path: Path, nab_file: NABFile, anomaly: np.ndarray, raw: np.ndarray) -> None:
    """NAB's result columns, plus the detector's raw score before the threshold policy."""
    labels = nab_file.labels()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "anomaly_score", "label", "raw_score"])
        for ts, value, score, label, raw_score in zip(
            nab_file.timestamps, nab_file.values, anomaly, labels, raw, strict=True
        ):
            writer.writerow([ts, f"{value:.6g}", f"{score:.6f}", int(label), f"{raw_score:.6g}"])


def _plot_file(folder: Path, nab_file: NABFile, scores: FileScores, threshold: float) -> None:
    detections = scores.anomaly_score >= threshold
    detections[: nab_file.probation] = False
    plots.score_timeline(
        folder / (nab_file.key.replace("/", "__").removesuffix(".csv") + ".png"),
        f"{nab_file.key} (standard-profile threshold {threshold:.3f})",
        nab_file.values,
        scores.anomaly_score,
        labels=nab_file.labels(),
        detections=detections,
        threshold=threshold,
    )
