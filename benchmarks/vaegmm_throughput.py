"""VAEGMM scoring speed (rows/s) at several batch sizes, with samples=10.

Beside it, in the same run: the same model with samples=1 (one encoder/decoder/energy
pass: the work per row that 10 samples repeat), so the ratio shows the cost of sampling.

    python -m benchmarks.vaegmm_throughput [--features 18] [--batches 1,32,1024,8192]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from streamdet.core.tensorflow import scoring_device
from streamdet.detectors import VAEGMMDetector


def rate(fn, batch: np.ndarray, min_seconds: float, repeats: int) -> float:
    fn(batch)
    best = 0.0
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            fn(batch)
            calls += 1
        best = max(best, calls * len(batch) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=18)
    parser.add_argument("--batches", default="1,32,1024,8192")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train = rng.normal(size=(4096, args.features)).astype(np.float32)
    ten = VAEGMMDetector(epochs=1, samples=10, seed=0)
    ten.fit(train)
    one = VAEGMMDetector(epochs=1, samples=1, seed=0)
    one.fit(train)
    rows = []
    for size in (int(b) for b in args.batches.split(",")):
        batch = rng.normal(size=(size, args.features)).astype(np.float32)
        row = {
            "batch": size,
            "samples_10_rows_per_s": rate(ten.score, batch, args.min_seconds, args.repeats),
            "samples_1_rows_per_s": rate(one.score, batch, args.min_seconds, args.repeats),
        }
        row["ratio_10_to_1"] = row["samples_10_rows_per_s"] / row["samples_1_rows_per_s"]
        rows.append(row)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )
    print(f"\nscored on {scoring_device().describe()}")
    print("batch | samples=10 rows/s | samples=1 rows/s | ratio")
    for r in rows:
        print(
            f"{r['batch']} | {r['samples_10_rows_per_s']:.0f} | {r['samples_1_rows_per_s']:.0f}"
            f" | {r['ratio_10_to_1']:.2f}"
        )


if __name__ == "__main__":
    main()
