"""Seq2Seq scoring throughput (windows/s) next to its ceiling, measured in one run.

The ceiling is a plain, non-autoregressive forward pass of the same layers (the
teacher-forced graph: the decoder reads the true previous values, so all steps of each LSTM
run as one Keras layer call). The autoregressive decoder must feed each prediction back, so
it can only approach that ceiling.

    python -m benchmarks.seq2seq_throughput [--seq-len 50] [--latent-dim 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from streamdet.core.tensorflow import scoring_device
from streamdet.detectors import Seq2SeqDetector
from streamdet.detectors.keras_base import settle_scoring_checks, tf
from streamdet.detectors.seq2seq import _shift_right


def best_rate(fn, batch: np.ndarray, min_seconds: float, repeats: int) -> float:
    """Best windows/s over ``repeats`` timed rounds of at least ``min_seconds`` each."""
    for _ in range(3):  # trace, compile and check the scoring shapes outside the timing
        fn(batch)
    settle_scoring_checks()
    rates = []
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            fn(batch)
            calls += 1
        rates.append(calls * len(batch) / (time.perf_counter() - started))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batches", default="1,32,256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    series = np.sin(np.arange(3000) / 7.0)[:, None] + 0.05 * rng.standard_normal((3000, 1))
    results = []
    detectors = {}
    for jit in (True, False):
        det = Seq2SeqDetector(
            seq_len=args.seq_len,
            latent_dim=args.latent_dim,
            epochs=1,
            stride=10,
            jit_compile=jit,
            seed=0,
        )
        det.fit(series.astype(np.float32))
        detectors[jit] = det
    model = detectors[True].model
    ceiling_fn = tf.function(
        lambda x: model([x, _shift_right(x)], training=False), jit_compile=True
    )

    for size in (int(b) for b in args.batches.split(",")):
        batch = rng.standard_normal((size, args.seq_len, 1)).astype(np.float32)
        tensor = tf.constant(batch)
        row = {"batch": size}
        row["autoregressive_xla"] = best_rate(
            detectors[True]._decode, tensor, args.min_seconds, args.repeats
        )
        row["autoregressive_no_xla"] = best_rate(
            detectors[False]._decode, tensor, args.min_seconds, args.repeats
        )
        row["ceiling_forward_pass"] = best_rate(ceiling_fn, tensor, args.min_seconds, args.repeats)
        row["predict_api"] = best_rate(
            detectors[True].predict, batch, args.min_seconds, args.repeats
        )
        row["ratio_xla_to_ceiling"] = row["autoregressive_xla"] / row["ceiling_forward_pass"]
        row["ratio_predict_to_raw"] = row["predict_api"] / row["autoregressive_xla"]
        results.append(row)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )

    header = [
        "batch",
        "AR+XLA w/s",
        "AR no-XLA w/s",
        "ceiling w/s",
        "predict() w/s",
        "AR+XLA / ceiling",
        "predict() / AR+XLA",
    ]
    print(f"\nscored on {scoring_device().describe()}")
    print(" | ".join(header))
    for r in results:
        print(
            " | ".join(
                [
                    str(r["batch"]),
                    f"{r['autoregressive_xla']:.0f}",
                    f"{r['autoregressive_no_xla']:.0f}",
                    f"{r['ceiling_forward_pass']:.0f}",
                    f"{r['predict_api']:.0f}",
                    f"{r['ratio_xla_to_ceiling']:.2f}",
                    f"{r['ratio_predict_to_raw']:.2f}",
                ]
            )
        )


if __name__ == "__main__":
    main()
