"""How the likelihood rule's ``short_window`` default was chosen: on development files only.

Reads the raw scores an ``evaluate nab`` run wrote (``<out>/seed*/continual/results``), runs
the likelihood rule again over them with each ``history`` x ``short_window`` of a grid, and
scores NAB's protocol (the corpus-wide best threshold, the daemon's cooldown) on the files of
the development categories alone (NAB's artificial files by default), mean over seeds.

An approximation, for choosing only: the rule starts from the first 200 scores after each
file's probation instead of the model's calibration scores, and the replay's retrainings
stay those of the configured rule. The chosen setting is then measured through the daemon
with ``evaluate nab --threshold-params``::

    streamdet evaluate nab --data ../shared/data/nab --seeds 3 --out eval/nab
    python -m benchmarks.choose_likelihood_window --data ../shared/data/nab --runs eval/nab
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
from pathlib import Path

import numpy as np

from streamdet.evaluation.nab import load_corpus, load_profiles
from streamdet.evaluation.nab_run import Lifecycle, Replayed, _protocol
from streamdet.thresholds import AnomalyLikelihood

HISTORIES = (500, 2000, 8000)
SHORT_WINDOWS = (1, 3, 5, 10)
DEVELOPMENT = ("artificialNoAnomaly", "artificialWithAnomaly")


def _raw_scores(results: Path, key: str) -> np.ndarray:
    with (results / key.replace("/", "__")).open(newline="") as handle:
        return np.array([float(row["raw_score"]) for row in csv.DictReader(handle)])


def _severities(raw: np.ndarray, start: int, history: int, short_window: int) -> np.ndarray:
    rule = AnomalyLikelihood(history=history, short_window=short_window)
    if len(raw) > start + 200:
        rule.fit(raw[start : start + 200])
    severity = np.zeros(len(raw))
    for row in range(start, len(raw)):
        severity[row] = rule.decide(float(raw[row])).severity
    return np.nan_to_num(severity, posinf=1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="an evaluate nab --out folder")
    parser.add_argument("--categories", default=",".join(DEVELOPMENT))
    args = parser.parse_args()
    categories = tuple(args.categories.split(","))
    corpus = [f for f in load_corpus(args.data) if f.key.split("/")[0] in categories]
    profiles = load_profiles(args.data / "config" / "profiles.json")
    runs = sorted(p for p in [args.runs, *args.runs.glob("seed*")] if (p / "nab.json").is_file())
    if not runs or not corpus:
        raise SystemExit(f"no finished seeds under {args.runs} or no files of {categories}")
    raw = {
        (run, f.key): _raw_scores(run / "continual" / "results", f.key)
        for run in runs
        for f in corpus
    }
    print(f"{len(corpus)} development files, {len(runs)} seed(s); NAB protocol score, mean:")
    for history, short_window in itertools.product(HISTORIES, SHORT_WINDOWS):
        scores: dict[str, list[float]] = {p.name: [] for p in profiles}
        for run in runs:
            replays = []
            for f in corpus:
                values = raw[(run, f.key)]
                severity = _severities(values, f.probation, history, short_window)
                flags = np.zeros(len(values), bool)
                replays.append(Replayed(values, severity, flags, [""] * len(values), {}))
            for name, result in _protocol(corpus, replays, Lifecycle(), profiles).items():
                scores[name].append(result["score"])
        means = "  ".join(f"{name} {statistics.fmean(v):.1f}" for name, v in scores.items())
        print(f"history {history:5d} short_window {short_window:2d}: {means}")


if __name__ == "__main__":
    main()
