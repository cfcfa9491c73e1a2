"""alibi-detect's documented usages beside alibi-detect 0.13 itself: the same rows, the
same networks, the same ``fit`` / ``infer_threshold`` / ``predict`` calls, each side in a
process of its own, over seeds.

What it answers: whether a figure of streamdet's drop-in classes at a page's settings is the
page's (alibi-detect gives the same) or a defect of ours (it does not).

alibi-detect is BSL-licensed: never a dependency, never imported by streamdet. Its side runs
from a throwaway virtual environment you point this command at, through its public API only::

    python -m venv /tmp/alibienv
    /tmp/alibienv/bin/pip install 'alibi-detect[tensorflow]==0.13.0'
    python -m benchmarks.alibi_examples --alibi-python /tmp/alibienv/bin/python --seeds 3

``kdd99``, the VAEGMM page's usage under ``streamdet evaluate kdd99 --protocol alibi
--page-defaults``'s protocol: the 18 continuous features, attacks as outliers; a threshold
batch of 1,000 rows with 5 % outliers and a test batch of 1,000 rows with 10 % outliers,
drawn first (seeded) and never trained on; training on the other normal rows, raw, as the
page passes them; ``fit(X_train, epochs=10, batch_size=1024)``;
``infer_threshold(X_threshold, threshold_perc=95)``.

``ecg5000``, the Seq2Seq page's usage under ``streamdet evaluate ecg5000 --page-defaults``'s
protocol: training on the 2,627 normal beats of the 4,500-beat file,
``OutlierSeq2Seq(1, 140, threshold=None, latent_dim=100)``, ``fit`` with its defaults,
``infer_threshold(X_threshold, threshold_perc=60)`` on 1,000 beats with 40 % outliers,
``predict`` on the 500-beat file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def page_vaegmm(keras: Any, tf: Any, detector_class: Any, n_features: int) -> Any:
    """The page's networks: encoder 60-30-10 tanh then the code, decoder 10-30-60 tanh,
    a density net of 10 tanh units and 2 softmax components; latent 4, 10 samples."""
    latent, components = 4, 2

    def stack(inputs: int, units: tuple[int, ...], output: int, last: Any) -> Any:
        layers = [keras.layers.Dense(n, activation=tf.nn.tanh) for n in units]
        layers.append(keras.layers.Dense(output, activation=last))
        return keras.Sequential([keras.layers.InputLayer(input_shape=(inputs,)), *layers])

    return detector_class(
        threshold=None,
        encoder_net=stack(n_features, (60, 30, 10), latent, None),
        decoder_net=stack(latent, (10, 30, 60), n_features, None),
        gmm_density_net=stack(latent + 2, (10,), components, tf.nn.softmax),
        n_gmm=components,
        latent_dim=latent,
        samples=10,
    )


def worker(example: str, side: str, data: Path, seed: int) -> dict[str, Any]:
    """One side's training and scores (run in that side's own Python)."""
    if side == "alibi":
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import alibi_detect
        import tensorflow as tf
        from alibi_detect.od import OutlierSeq2Seq, OutlierVAEGMM

        keras = tf.keras
        version = f"alibi-detect {alibi_detect.__version__}"
    else:
        import streamdet
        from streamdet.detectors import OutlierSeq2Seq, OutlierVAEGMM
        from streamdet.detectors.keras_base import keras, tf

        version = f"streamdet {streamdet.__version__}"
    tf.keras.utils.set_random_seed(seed)
    rows = np.load(data)
    started = time.perf_counter()
    if example == "kdd99":
        detector = page_vaegmm(keras, tf, OutlierVAEGMM, rows["train"].shape[1])
        detector.fit(rows["train"], epochs=10, batch_size=1024, verbose=False)
        fitted = time.perf_counter() - started
        detector.infer_threshold(rows["threshold"], threshold_perc=95)
    else:
        detector = OutlierSeq2Seq(1, rows["train"].shape[1], threshold=None, latent_dim=100)
        detector.fit(rows["train"], verbose=False)
        fitted = time.perf_counter() - started
        detector.infer_threshold(rows["threshold"], threshold_perc=60)
    prediction = detector.predict(rows["test"])["data"]
    return {
        "example": example,
        "side": side,
        "version": version,
        "seed": seed,
        "fit_s": round(fitted, 1),
        "threshold": float(detector.threshold),
        "scores": np.asarray(prediction["instance_score"], dtype=float).tolist(),
        "is_outlier": np.asarray(prediction["is_outlier"], dtype=int).tolist(),
    }


def draw(example: str, seed: int, folder: Path) -> tuple[Path, np.ndarray]:
    """The seed's threshold, test and training rows (``evaluate``'s draw)."""
    from streamdet.evaluation.data import dataset_dir, outlier_batch

    path = folder / f"{example}_seed{seed}.npz"
    rng = np.random.default_rng(seed)
    if example == "ecg5000":
        from streamdet.evaluation.ecg5000 import load_ecg5000

        X_big, y_big, X_test, y_test = load_ecg5000(dataset_dir(None, "ecg5000"))
        X_thr, _ = outlier_batch(X_big, y_big, 1000, 40, rng)
        np.savez(path, train=X_big[y_big == 0], threshold=X_thr, test=X_test)
        return path, y_test
    from streamdet.evaluation.kdd99 import alibi_matrix, load_kdd

    names, rows, labels = load_kdd(dataset_dir(None, "kddcup99"))
    X = alibi_matrix(names, rows)
    y = (labels != "normal").astype(np.int8)
    X_thr, _ = outlier_batch(X, y, 1000, 5, rng)
    X_test, y_test = outlier_batch(X, y, 1000, 10, rng)
    held = {r.tobytes() for r in np.r_[X_thr, X_test]}
    train = np.asarray([r for r in X[y == 0] if r.tobytes() not in held])
    np.savez(path, train=train, threshold=X_thr, test=X_test)
    return path, y_test


def run_side(python: str, example: str, side: str, data: Path, seed: int) -> dict[str, Any]:
    command = [
        python, "-m", "benchmarks.alibi_examples", "--worker", example, "--side", side,
        "--data", str(data), "--seed", str(seed),
    ]  # fmt: skip
    print(f"alibi_examples: {example} seed {seed} on {side}", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"{example} on the {side} side, seed {seed}, failed:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(scores: np.ndarray) -> float:
    """The median of the finite scores (NaN when there are none: a diverged training)."""
    finite = scores[np.isfinite(scores)]
    return float(np.median(finite)) if len(finite) else float("nan")


def figures(y_test: np.ndarray, result: dict[str, Any]) -> dict[str, float]:
    from streamdet.evaluation.metrics import roc_auc

    flagged = np.asarray(result["is_outlier"], dtype=bool)
    truth = y_test.astype(bool)
    hits = int((flagged & truth).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    scores = np.asarray(result["scores"])
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": roc_auc(y_test, scores),
        "scores_finite": int(np.isfinite(scores).sum()),
        "scores_distinct": len(np.unique(scores[np.isfinite(scores)])),
        "outlier_score_median": _median(scores[truth]),
        "inlier_score_median": _median(scores[~truth]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alibi-python", help="python of a virtual env with alibi-detect")
    parser.add_argument("--examples", default="kdd99,ecg5000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="also write the report (JSON) here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.side, Path(args.data), args.seed)))
        return
    if not args.alibi_python:
        parser.error("--alibi-python is required (see the module's docstring)")
    runs: list[dict[str, Any]] = []
    sides = (("streamdet", sys.executable), ("alibi", args.alibi_python))
    with tempfile.TemporaryDirectory(prefix="streamdet-alibi-examples-") as folder:
        for example in args.examples.split(","):
            for seed in range(args.seeds):
                data, y_test = draw(example, seed, Path(folder))
                for side, python in sides:
                    result = run_side(python, example, side, data, seed)
                    run = {k: v for k, v in result.items() if k not in ("scores", "is_outlier")}
                    runs.append({**run, **figures(y_test, result)})
                    print(
                        f"  {example} seed {seed} {side:>9}: F1 {runs[-1]['f1']:.3f}  "
                        f"AUROC {runs[-1]['auroc']:.3f}  (fit {result['fit_s']} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    summary: dict[str, dict[str, Any]] = {}
    for example in args.examples.split(","):
        for side, _ in sides:
            mine = [r for r in runs if r["side"] == side and r["example"] == example]
            figures_of = {
                key: (statistics.mean(r[key] for r in mine), statistics.stdev(r[key] for r in mine))
                if len(mine) > 1
                else (mine[0][key], 0.0)
                for key in ("precision", "recall", "f1", "auroc")
            }
            summary[f"{example} {side}"] = figures_of
            cells = "  ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in figures_of.items())
            print(f"{example} {side:>9} ({mine[0]['version']}): {cells}")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
