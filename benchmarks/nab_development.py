"""What the choosing commands share: a finished ``evaluate nab`` run read back on the files
of the development categories only (NAB's artificial files by default)."""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamdet.evaluation.nab import CostProfile, NABFile, load_corpus, load_profiles

DEVELOPMENT = ("artificialNoAnomaly", "artificialWithAnomaly")


@dataclass(frozen=True)
class DevelopmentRuns:
    corpus: list[NABFile]
    profiles: list[CostProfile]
    # One folder per finished seed (``--seeds 1`` writes its run into the folder itself).
    seeds: list[Path]


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="an evaluate nab --out folder")
    parser.add_argument("--categories", default=",".join(DEVELOPMENT))
    return parser.parse_args()


def load(data: Path, runs: Path, categories: tuple[str, ...] = DEVELOPMENT) -> DevelopmentRuns:
    corpus = [f for f in load_corpus(data) if f.key.split("/")[0] in categories]
    seeds = sorted(p for p in [runs, *runs.glob("seed*")] if (p / "nab.json").is_file())
    if not seeds or not corpus:
        raise SystemExit(f"no finished seeds under {runs} or no files of {categories}")
    return DevelopmentRuns(corpus, load_profiles(data / "config" / "profiles.json"), seeds)


def result_column(seed: Path, nab_file: NABFile, column: str) -> np.ndarray:
    """One column of a file's per-row results (``anomaly_score``, ``raw_score``...)."""
    path = seed / "continual" / "results" / nab_file.key.replace("/", "__")
    with path.open(newline="") as handle:
        return np.array([float(row[column]) for row in csv.DictReader(handle)])
