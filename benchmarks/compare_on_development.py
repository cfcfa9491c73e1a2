"""Which of several finished ``evaluate nab`` runs alerts best on development files only.

A setting (e.g. an ensemble's ``trust``) is chosen by this, never by the real files the
benchmark reports: each run's own alerts (the daemon's rule and cooldown, as written in its
per-row results) are scored by NAB's scorer on the files of the development categories (NAB's
artificial files by default), per profile, as the mean and sd over the run's seeds::

    streamdet evaluate nab --data ../shared/data/nab --detector ensemble --out eval/a
    streamdet evaluate nab --data ../shared/data/nab --detector ensemble \\
        --params '{"trust": "equal"}' --out eval/b
    python -m benchmarks.compare_on_development --data ../shared/data/nab --runs eval/a eval/b
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.nab_development import DEVELOPMENT, load, result_column
from streamdet.evaluation.nab import FileScores, score_at


def compare(
    data: Path, runs: list[Path], categories: tuple[str, ...] = DEVELOPMENT
) -> dict[str, dict[str, list[float]]]:
    """Per run, per profile: the development files' score of its alerts, one per seed."""
    report: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        development = load(data, run, categories)
        scores: dict[str, list[float]] = {p.name: [] for p in development.profiles}
        for seed in development.seeds:
            files = [
                FileScores(f.key, result_column(seed, f, "alert"), f.windows, f.probation)
                for f in development.corpus
            ]
            for profile in development.profiles:
                scores[profile.name].append(score_at(files, profile, 0.5)["score"])
        report[str(run)] = scores
    return report


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {sd:.1f} ({len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--categories", default=",".join(DEVELOPMENT))
    args = parser.parse_args()
    report: dict[str, Any] = compare(args.data, args.runs, tuple(args.categories.split(",")))
    profiles = list(next(iter(report.values())))
    print("run".ljust(40) + "".join(p.ljust(22) for p in profiles))
    for run, scores in report.items():
        print(run.ljust(40) + "".join(_mean_sd(scores[p]).ljust(22) for p in profiles))


if __name__ == "__main__":
    main()
