"""Scoring speed beside alibi-detect 0.13, in one run: ``predict`` of Seq2Seq and VAEGMM at
several batch sizes, the same architecture and data on both sides, each side in a process
of its own.

alibi-detect is BSL-licensed: never a dependency, never imported by streamdet. Its side runs
from a throwaway virtual environment you point this command at, through its public API only
(``OutlierSeq2Seq`` / ``OutlierVAEGMM``, ``fit``, ``infer_threshold``, ``predict``)::

    python -m venv /tmp/alibienv
    /tmp/alibienv/bin/pip install 'alibi-detect[tensorflow]==0.13.0'
    python -m benchmarks.alibi_speed --alibi-python /tmp/alibienv/bin/python

Rates are the best of ``--repeats`` rounds of at least ``--min-seconds``, after three
untimed calls (and, on streamdet's side, its background scoring-shape checks). Models are
trained one epoch: speed does not depend on the weights. The ratios are streamdet's rate
over alibi-detect's, measured minutes apart on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN, LATENT, FEATURES = 50, 64, 18
SEQ2SEQ_BATCHES = (1, 32, 256, 1024)
VAEGMM_BATCHES = (1, 32, 1024, 8192)


def best_rate(call: Any, rows: int, min_seconds: float, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            call()
            calls += 1
        best = max(best, calls * rows / (time.perf_counter() - started))
    return best


def sine_windows(count: int) -> np.ndarray:
    t = np.arange(count + SEQ_LEN, dtype="float32")
    series = np.sin(t / 7) + 0.05 * np.random.default_rng(0).normal(size=t.shape)
    return np.stack([series[i : i + SEQ_LEN] for i in range(count)])[..., None].astype("float32")


def tabular_rows(count: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, FEATURES)).astype("float32")


def worker(detector: str, side: str, min_seconds: float, repeats: int) -> dict[str, Any]:
    """One side's rates (run in that side's own Python)."""
    if side == "alibi":
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import alibi_detect
        import tensorflow as tf
        from alibi_detect.od import OutlierSeq2Seq, OutlierVAEGMM

        keras = tf.keras
        on = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
        device = f"alibi-detect {alibi_detect.__version__} on TensorFlow {tf.__version__} ({on})"
    else:
        from streamdet.core.tensorflow import scoring_device
        from streamdet.detectors import OutlierSeq2Seq, OutlierVAEGMM
        from streamdet.detectors.keras_base import keras, settle_scoring_checks

        device = f"streamdet on {scoring_device().describe()}"
    rates: dict[str, float] = {}
    if detector == "seq2seq":
        train = sine_windows(2_000)
        od = OutlierSeq2Seq(1, SEQ_LEN, threshold=None, latent_dim=LATENT)
        od.fit(train, epochs=1, batch_size=64, verbose=False)
        od.infer_threshold(train[:256], threshold_perc=95)
        batches = SEQ2SEQ_BATCHES
        data = sine_windows(max(batches))
    else:  # the networks of alibi-detect's VAEGMM page (streamdet's defaults too)
        layers = keras.layers
        encoder = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                layers.Dense(60, activation="tanh"),
                layers.Dense(30, activation="tanh"),
            ]
        )
        decoder = keras.Sequential(
            [
                keras.Input((2,)),
                layers.Dense(30, activation="tanh"),
                layers.Dense(60, activation="tanh"),
                layers.Dense(FEATURES),
            ]
        )
        density = keras.Sequential(
            [
                keras.Input((2 + 2,)),
                layers.Dense(10, activation="tanh"),
                layers.Dense(2, activation="softmax"),
            ]
        )
        od = OutlierVAEGMM(
            threshold=None,
            encoder_net=encoder,
            decoder_net=decoder,
            gmm_density_net=density,
            n_gmm=2,
            latent_dim=2,
            samples=10,
        )
        train = tabular_rows(4_096)
        od.fit(train, epochs=1, batch_size=1024, verbose=False)
        od.infer_threshold(train, threshold_perc=95)
        batches = VAEGMM_BATCHES
        data = tabular_rows(max(batches))
    for batch in batches:
        rows = data[:batch]

        def call(rows: np.ndarray = rows, batch: int = batch) -> None:
            if detector == "seq2seq":  # alibi-detect's defaults return both scores
                od.predict(rows, batch_size=batch, return_feature_score=True)
            else:
                od.predict(rows, batch_size=batch)

        for _ in range(3):
            call()
        if side == "streamdet":
            settle_scoring_checks()
        rates[str(batch)] = best_rate(call, batch, min_seconds, repeats)
    return {"detector": detector, "side": side, "device": device, "rows_per_s": rates}


def run_side(python: str, detector: str, side: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        python, "-m", "benchmarks.alibi_speed", "--worker", detector, "--side", side,
        "--min-seconds", str(args.min_seconds), "--repeats", str(args.repeats),
    ]  # fmt: skip
    print(f"alibi_speed: {detector} on {side} ({python})", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} side of {detector} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alibi-python", help="python of a virtual env with alibi-detect")
    parser.add_argument("--detectors", default="seq2seq,vaegmm")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the report (JSON) here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.side, args.min_seconds, args.repeats)))
        return
    if not args.alibi_python:
        parser.error("--alibi-python is required (see the module's docstring)")
    report = []
    for detector in args.detectors.split(","):
        ours = run_side(sys.executable, detector, "streamdet", args)
        theirs = run_side(args.alibi_python, detector, "alibi", args)
        ratios = {
            batch: ours["rows_per_s"][batch] / theirs["rows_per_s"][batch]
            for batch in ours["rows_per_s"]
        }
        report.append({"streamdet": ours, "alibi": theirs, "ratio": ratios})
        print(f"{detector}: {ours['device']} / {theirs['device']}")
        for batch, ratio in ratios.items():
            print(
                f"  batch {batch:>5}: {ours['rows_per_s'][batch]:>10.0f} vs "
                f"{theirs['rows_per_s'][batch]:>10.0f} rows/s  ratio {ratio:.2f}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
