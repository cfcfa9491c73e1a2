"""The Numenta Anomaly Benchmark's scoring rules, implemented from its published description.

Each labelled window rewards the earliest detection inside it with a scaled sigmoid of its
position (a detection at the window's first row earns the full TP weight), and a window with
no detection costs the FN weight. A detection outside every window costs the FP weight,
scaled down just after a window. Rows in the probationary period (the first 15 % of a file,
at most 750 rows) are not scored. One threshold per profile is chosen for the whole corpus;
scores are normalised so that the null detector (no detections) scores 0 and a perfect
detector 100.

The threshold search here is exact: it walks every distinct anomaly score once, in
descending order, across all files.

>>> profile = CostProfile("standard", tp=1.0, fn=1.0, fp=0.11)
>>> f = FileScores("a.csv", np.zeros(100), windows=[(10, 19)], probation=0)
>>> f.anomaly_score[10] = 1.0
>>> round(f.raw_score(profile, 0.5), 6)
1.0
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.errors import DataNotFoundError, InvalidInputError


@dataclass(frozen=True)
class CostProfile:
    """One NAB application profile: the weights of TP, FN and FP."""

    name: str
    tp: float
    fn: float
    fp: float


def load_profiles(path: Path) -> list[CostProfile]:
    """Read NAB's ``config/profiles.json``."""
    raw = json.loads(Path(path).read_text())
    return [
        CostProfile(
            name,
            tp=float(body["CostMatrix"]["tpWeight"]),
            fn=float(body["CostMatrix"]["fnWeight"]),
            fp=float(body["CostMatrix"]["fpWeight"]),
        )
        for name, body in raw.items()
    ]


def probation_period(n_rows: int, probation_percent: float = 0.15) -> int:
    """Rows NAB leaves unscored at the start of a file: 15 %, at most 750.

    >>> probation_period(4032), probation_period(22695)
    (604, 750)
    """
    return int(min(math.floor(probation_percent * n_rows), probation_percent * 5000))


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's reward curve: ~+1 at a window's start, 0 at its end, -> -1 after it.

    >>> round(scaled_sigmoid(-1.0), 4), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.9866, 0.0, -1.0)
    """
    if relative_position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * relative_position)) - 1.0


@dataclass
class FileScores:
    """Anomaly scores of one file, its labelled windows (row index pairs, inclusive)."""

    name: str
    anomaly_score: np.ndarray
    windows: list[tuple[int, int]]
    probation: int
    _cache: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.anomaly_score = np.asarray(self.anomaly_score, dtype=np.float64)
        for start, end in self.windows:
            if not 0 <= start <= end < len(self.anomaly_score):
                raise InvalidInputError(f"{self.name}: window ({start}, {end}) is out of range")

    def sweep(self, profile: CostProfile) -> tuple[np.ndarray, np.ndarray]:
        """Per-row weight if detected, and the row's window number (-1 outside, -2 probation)."""
        if profile.name in self._cache:
            return self._cache[profile.name]
        n = len(self.anomaly_score)
        weights = np.zeros(n)
        window_of = np.full(n, -1, dtype=np.int64)
        max_tp = scaled_sigmoid(-1.0)
        prev_right: int | None = None
        prev_width = 0
        bounds = sorted(self.windows)
        w = 0
        for i in range(n):
            if w < len(bounds) and bounds[w][0] <= i <= bounds[w][1]:
                left, right = bounds[w]
                width = right - left + 1
                weights[i] = scaled_sigmoid(-(right - i + 1) / width) * profile.tp / max_tp
                window_of[i] = w
                if i == right:
                    prev_right, prev_width = right, width
                    w += 1
            else:
                if prev_right is None:
                    unweighted = -1.0
                else:
                    unweighted = scaled_sigmoid(abs(prev_right - i) / max(prev_width - 1, 1))
                weights[i] = unweighted * profile.fp
        window_of[: self.probation] = -2
        self._cache[profile.name] = (weights, window_of)
        return weights, window_of

    def scored_windows(self) -> list[int]:
        """Windows with at least one row after the probationary period."""
        return [k for k, (_, end) in enumerate(sorted(self.windows)) if end >= self.probation]

    def raw_score(self, profile: CostProfile, threshold: float) -> float:
        """This file's NAB score at one threshold (``anomaly_score >= threshold`` detects)."""
        return self.counts(profile, threshold)["score"]

    def counts(self, profile: CostProfile, threshold: float) -> dict[str, Any]:
        """Score, TP/FN windows and FP rows at one threshold."""
        weights, window_of = self.sweep(profile)
        detected = self.anomaly_score >= threshold
        detected[: self.probation] = False
        fp_rows = detected & (window_of == -1)
        score = float(weights[fp_rows].sum())
        tp = fn = 0
        for k in self.scored_windows():
            hits = detected & (window_of == k)
            if hits.any():
                score += float(weights[hits].max())
                tp += 1
            else:
                score -= profile.fn
                fn += 1
        return {"score": score, "tp": tp, "fn": fn, "fp": int(fp_rows.sum())}


def optimise_threshold(files: list[FileScores], profile: CostProfile) -> tuple[float, float]:
    """The corpus-wide threshold with the highest summed score, and that score.

    Walks every distinct score from the highest down, keeping the running total of FP
    weights and of each window's best (earliest) detection.
    """
    entries = []
    window_base = 0
    window_best: list[float] = []
    for f in files:
        weights, window_of = f.sweep(profile)
        scored = f.scored_windows()
        mapping = {k: window_base + j for j, k in enumerate(scored)}
        window_best.extend([-profile.fn] * len(scored))
        rows = np.flatnonzero(window_of != -2)
        for i in rows:
            global_window = mapping.get(int(window_of[i]), -1) if window_of[i] >= 0 else -1
            entries.append((f.anomaly_score[i], weights[i], global_window))
        window_base += len(scored)
    if not entries:
        raise InvalidInputError("no scorable rows in the corpus")
    scores = np.array([e[0] for e in entries])
    weights = np.array([e[1] for e in entries])
    windows = np.array([e[2] for e in entries], dtype=np.int64)
    order = np.argsort(-scores, kind="mergesort")
    total = float(sum(window_best))
    best_total, best_threshold = total, float(np.nextafter(scores.max(), np.inf))
    detected = np.zeros(len(window_best), dtype=bool)
    i = 0
    while i < len(order):
        value = scores[order[i]]
        while i < len(order) and scores[order[i]] == value:
            j = order[i]
            k = windows[j]
            if k < 0:
                total += weights[j]
            elif not detected[k] or weights[j] > window_best[k]:
                total += weights[j] - window_best[k]
                window_best[k] = weights[j]
                detected[k] = True
            i += 1
        if total > best_total:
            best_total, best_threshold = total, float(value)
    return best_threshold, best_total


def normalised_score(files: list[FileScores], profile: CostProfile) -> dict[str, Any]:
    """Optimise the threshold and normalise: null detector 0, perfect detector 100."""
    threshold, _ = optimise_threshold(files, profile)
    return score_at(files, profile, threshold)


def score_at(files: list[FileScores], profile: CostProfile, threshold: float) -> dict[str, Any]:
    """The corpus' normalised score at one threshold, with its counts per file."""
    counts = [f.counts(profile, threshold) for f in files]
    per_file = {f.name: c for f, c in zip(files, counts, strict=True)}
    raw = sum(c["score"] for c in counts)
    n_windows = sum(len(f.scored_windows()) for f in files)
    null = -profile.fn * n_windows
    perfect = profile.tp * n_windows
    score = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return {
        "profile": profile.name,
        "threshold": threshold,
        "raw_score": raw,
        "null_score": null,
        "perfect_score": perfect,
        "score": score,
        "tp_windows": sum(c["tp"] for c in counts),
        "fn_windows": sum(c["fn"] for c in counts),
        "fp_rows": sum(c["fp"] for c in counts),
        "files": per_file,
    }


@dataclass(frozen=True)
class NABFile:
    """One data file of a NAB-layout corpus, with its windows as row indices."""

    key: str
    timestamps: list[str]
    values: np.ndarray
    windows: list[tuple[int, int]]

    @property
    def probation(self) -> int:
        return probation_period(len(self.values))

    def labels(self) -> np.ndarray:
        """1 inside a labelled window, 0 elsewhere."""
        y = np.zeros(len(self.values), dtype=np.int8)
        for start, end in self.windows:
            y[start : end + 1] = 1
        return y


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def load_corpus(root: str | Path, windows_file: str = "combined_windows.json") -> list[NABFile]:
    """Every ``data/<category>/<file>.csv`` of a NAB-layout corpus with its windows."""
    base = Path(root)
    labels_path = base / "labels" / windows_file
    if not (base / "data").is_dir() or not labels_path.is_file():
        raise DataNotFoundError(
            f"{base} is not a NAB-layout corpus: it needs data/<category>/<file>.csv and "
            f"labels/{windows_file}"
        )
    all_windows = json.loads(labels_path.read_text())
    files = []
    for path in sorted((base / "data").glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name}"
        if key not in all_windows:
            continue
        lines = path.read_text().strip().splitlines()
        rows = [line.split(",") for line in lines[1:]]
        timestamps = [r[0] for r in rows]
        values = np.array([float(r[1]) for r in rows], dtype=np.float64)
        times = np.array([_parse_time(t) for t in timestamps], dtype="datetime64[us]")
        windows = []
        for start, end in all_windows[key]:
            lo = int(np.searchsorted(times, np.datetime64(_parse_time(start)), "left"))
            hi = int(np.searchsorted(times, np.datetime64(_parse_time(end)), "right")) - 1
            if lo <= hi:
                windows.append((lo, hi))
        files.append(NABFile(key, timestamps, values, windows))
    if not files:
        raise DataNotFoundError(f"{base}: no data file is listed in labels/{windows_file}")
    return files
