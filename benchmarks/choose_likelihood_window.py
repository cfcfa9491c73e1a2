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

import itertools
import statistics

import numpy as np

from benchmarks.nab_development import arguments, load, result_column
from streamdet.evaluation.nab_run import Lifecycle, Replayed, protocol_scores
from streamdet.thresholds import AnomalyLikelihood

HISTORIES = (500, 2000, 8000)
SHORT_WINDOWS = (1, 3, 5, 10)


def _severities(raw: np.ndarray, start: int, history: int, short_window: int) -> np.ndarray:
    rule = AnomalyLikelihood(history=history, short_window=short_window)
    if len(raw) > start + 200:
        rule.fit(raw[start : start + 200])
    severity = np.zeros(len(raw))
    for row in range(start, len(raw)):
        severity[row] = rule.decide(float(raw[row])).severity
    return np.nan_to_num(severity, posinf=1e6)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    development = load(args.data, args.runs, tuple(args.categories.split(",")))
    corpus, profiles, runs = development.corpus, development.profiles, development.seeds
    raw = {(run, f.key): result_column(run, f, "raw_score") for run in runs for f in corpus}
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
            for name, result in protocol_scores(corpus, replays, Lifecycle(), profiles).items():
                scores[name].append(result["score"])
        means = "  ".join(f"{name} {statistics.fmean(v):.1f}" for name, v in scores.items())
        print(f"history {history:5d} short_window {short_window:2d}: {means}")


if __name__ == "__main__":
    main()
