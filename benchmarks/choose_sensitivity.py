"""How ``threshold.sensitivity``'s risks were chosen: on development files only.

Reads the per-row severities an ``evaluate nab`` run wrote (``<out>/seed*/continual/results``)
and, on the files of the development categories alone (NAB's artificial files by default,
never the real ones), finds for each of NAB's cost profiles the risk on a grid whose alerts
(the daemon's cooldown, the same scorer) score best on the seeds' mean: for the profile's
sensitivity, among the risks that keep the word's promise (``balanced`` is the rules' default,
``fewer_false_alarms`` below it, ``catch_everything`` above). The
risks read from the severities through ``ThresholdRule.severity_at``, so only a rule whose
scale allows that (``likelihood``) can be examined::

    streamdet evaluate nab --data ../shared/data/nab --seeds 3 --out eval/nab
    python -m benchmarks.choose_sensitivity --data ../shared/data/nab --runs eval/nab
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.nab_development import DEVELOPMENT, arguments, load, result_column
from streamdet.evaluation.nab import FileScores, score_at
from streamdet.evaluation.nab_run import (
    PROFILE_SENSITIVITY,
    Lifecycle,
    cooldown_detections,
    cooldown_seconds,
    event_seconds,
)
from streamdet.thresholds import RULES, rule_params
from streamdet.thresholds.base import SENSITIVITY_RISK

GRID = (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


def choose(data: Path, runs: Path, categories: tuple[str, ...] = DEVELOPMENT) -> dict[str, Any]:
    development = load(data, runs, categories)
    corpus, profiles, seeds = development.corpus, development.profiles, development.seeds
    configured = rule_params(json.loads((seeds[0] / "nab.json").read_text())["variants"]
                             ["continual"]["lifecycle"]["threshold"])  # fmt: skip
    rule = RULES[configured.policy]
    lifecycle = Lifecycle(threshold=configured)
    scores: dict[str, dict[float, list[float]]] = {p.name: {r: [] for r in GRID} for p in profiles}
    for seed in seeds:
        severities = [result_column(seed, f, "anomaly_score") for f in corpus]
        for risk in GRID:
            theta = rule.severity_at(configured, configured.model_copy(update={"risk": risk}))
            if theta is None:
                raise SystemExit(f"{configured.policy}: its severities cannot answer for a risk")
            files = [
                FileScores(
                    f.key,
                    cooldown_detections(
                        s, event_seconds(f), theta, cooldown_seconds(f, lifecycle)
                    ).astype(float),
                    f.windows,
                    f.probation,
                )
                for f, s in zip(corpus, severities, strict=True)
            ]
            for profile in profiles:
                scores[profile.name][risk].append(score_at(files, profile, 0.5)["score"])
    chosen = {}
    balanced = SENSITIVITY_RISK["balanced"]
    for profile in profiles:
        means = {risk: statistics.fmean(v) for risk, v in scores[profile.name].items()}
        level = PROFILE_SENSITIVITY.get(profile.name)
        # What each word promises: balanced is the rules' default (not chosen here);
        # fewer_false_alarms alerts less than it, catch_everything more.
        allowed = {
            "balanced": [balanced],
            "fewer_false_alarms": [r for r in GRID if r < balanced],
            "catch_everything": [r for r in GRID if r > balanced],
        }.get(level or "", list(GRID))
        chosen[profile.name] = {
            "sensitivity": level,
            "best_risk": max(means, key=lambda risk: (means[risk], risk)),
            "chosen_risk": max(allowed, key=lambda risk: (means[risk], risk)),
            "mean_score_by_risk": means,
        }
    return {"files": [f.key for f in corpus], "seeds": [s.name for s in seeds], "chosen": chosen}


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    report = choose(args.data, args.runs, tuple(args.categories.split(",")))
    print(f"{len(report['files'])} development files, {len(report['seeds'])} seed(s)")
    for name, row in report["chosen"].items():
        curve = "  ".join(f"{r:g}:{s:.1f}" for r, s in row["mean_score_by_risk"].items())
        print(
            f"{name:20s} {row['sensitivity']}: risk {row['chosen_risk']:g} "
            f"(best of the grid {row['best_risk']:g})  {curve}"
        )


if __name__ == "__main__":
    main()
