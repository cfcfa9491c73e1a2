"""What an ensemble costs to score beside its deep member alone, measured in one run.

The same Seq2Seq (the daemon's default member) is fitted alone and inside ensembles with the
classical members, on the same windows; each scores the same batches through the public
``score`` (the call the daemon makes), timed after its scoring shapes are checked. The
issue's target: an ensemble scores a window within 2x the deep model alone.

    python -m benchmarks.ensemble_cost [--seq-len 50] [--latent-dim 64] [--batches 1,256]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.seq2seq_throughput import best_rate
from streamdet.core.progress import stderr_progress
from streamdet.core.tensorflow import scoring_device
from streamdet.core.windows import sliding_windows
from streamdet.detectors import detector_class

CONFIGURATIONS = {
    "seq2seq alone": {"name": "seq2seq"},
    "ensemble seq2seq + pca": {
        "name": "ensemble",
        "params": {"members": [{"name": "seq2seq"}, {"name": "pca"}]},
    },
    "ensemble seq2seq + iforest": {
        "name": "ensemble",
        "params": {"members": [{"name": "seq2seq"}, {"name": "iforest"}]},
    },
    "ensemble seq2seq + pca + iforest": {
        "name": "ensemble",
        "params": {"members": [{"name": "seq2seq"}, {"name": "pca"}, {"name": "iforest"}]},
    },
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--out", help="also write the report (JSON) here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    t = np.arange(4000)
    series = np.sin(t / 7.0)[:, None] + 0.05 * rng.standard_normal((4000, 1))
    windows = sliding_windows(series, args.seq_len)
    seq2seq = {"latent_dim": args.latent_dim, "epochs": 1, "stride": 5, "seed": 0}
    batches = [int(b) for b in args.batches.split(",")]
    report: dict = {"seq_len": args.seq_len, "latent_dim": args.latent_dim, "windows_per_s": {}}
    report["scoring_device"] = scoring_device().describe()
    for label, spec in CONFIGURATIONS.items():
        params = dict(spec.get("params", {}))
        if spec["name"] == "seq2seq":
            params.update(seq2seq)
        else:
            params["members"] = [
                {"name": "seq2seq", "params": seq2seq} if m["name"] == "seq2seq" else m
                for m in params["members"]
            ]
        detector = detector_class(spec["name"])(**params)
        detector.fit(windows[:3000])
        rates = {}
        for batch in batches:
            data = windows[3000 : 3000 + batch]
            rates[batch] = best_rate(detector.score, data, args.min_seconds, args.repeats)
            stderr_progress(f"{label}: {rates[batch]:.0f} windows/s at batch {batch}")
        report["windows_per_s"][label] = rates
    alone = report["windows_per_s"]["seq2seq alone"]
    report["cost_vs_seq2seq_alone"] = {
        label: {batch: alone[batch] / rates[batch] for batch in batches}
        for label, rates in report["windows_per_s"].items()
        if label != "seq2seq alone"
    }
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
