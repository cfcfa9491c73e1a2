"""The ``streamdet`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from streamdet.errors import StreamdetError


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _evaluate_nab(args: argparse.Namespace) -> None:
    from streamdet.evaluation import nab_run

    params = json.loads(args.params) if args.params else None
    summary = nab_run.run(
        args.data,
        args.out,
        detector=args.detector,
        params=params,
        seed=args.seed,
        history=args.history,
        windows_file=args.windows_file,
    )
    rows = [
        [name, r["score"], r["threshold"], r["tp_windows"], r["fn_windows"], r["fp_rows"]]
        for name, r in summary["profiles"].items()
    ]
    print(_table(rows, ["profile", "NAB score", "threshold", "TP win", "FN win", "FP rows"]))


def _evaluate_vae_lstm_nab(args: argparse.Namespace) -> None:
    from streamdet.evaluation import vae_lstm_nab

    series = tuple(args.series.split(",")) if args.series else vae_lstm_nab.SERIES
    summary = vae_lstm_nab.run(
        args.data,
        args.out,
        series=series,
        epochs_vae=args.epochs_vae,
        epochs_lstm=args.epochs_lstm,
        threshold_perc=args.threshold_perc,
        seed=args.seed,
    )
    rows = []
    for name, result in summary["series"].items():
        for seg in result["segments"]:
            chosen = seg["threshold_without_labels"]
            rows.append(
                [
                    f"{name}/{seg['segment']}",
                    chosen["raw"]["f1"],
                    chosen["point_adjusted"]["f1"],
                    seg["oracle_best_f1"]["raw"]["f1"],
                    seg["oracle_best_f1"]["point_adjusted"]["f1"],
                    seg["auc"],
                ]
            )
    print(
        _table(rows, ["series/segment", "F1 raw", "F1 PA", "oracle F1 raw", "oracle F1 PA", "AUC"])
    )


def _evaluate_ecg5000(args: argparse.Namespace) -> None:
    from streamdet.evaluation import ecg5000

    result = ecg5000.run(args.data, args.out, epochs=args.epochs, seed=args.seed)
    m = result["metrics"]
    p = result["published"]
    print(
        _table(
            [
                [
                    "streamdet seq2seq",
                    m["precision"],
                    m["recall"],
                    m["f1"],
                    m["accuracy"],
                    m["auc"],
                ],
                ["published (alibi-detect)", "", "", p["f1"], p["accuracy"], p["auc"]],
            ],
            ["", "precision", "recall", "F1", "accuracy", "AUC"],
        )
    )


def _check_config(args: argparse.Namespace) -> None:
    from streamdet.config import load_config

    config = load_config(args.config)
    print(json.dumps(config.model_dump(mode="json"), indent=2))


def _run(args: argparse.Namespace) -> None:
    from streamdet.app import Application
    from streamdet.config import load_config

    import os

    overrides = {}
    if args.max_events:
        overrides["STREAMDET_SIMULATOR__MAX_EVENTS"] = str(args.max_events)
    if args.kafka:
        overrides["STREAMDET_KAFKA__BOOTSTRAP_SERVERS"] = args.kafka

    config = load_config(args.config, environ={**os.environ, **overrides})
    raise SystemExit(Application(config).run())


def _simulate(args: argparse.Namespace) -> None:
    import time

    from kafka import KafkaProducer

    from streamdet.sources.simulator import SensorSimulator

    sim = SensorSimulator(args.sensors, args.period, args.noise, args.anomaly_every, args.seed,
                          first_anomaly=args.first_anomaly)
    producer = KafkaProducer(bootstrap_servers=args.kafka, acks="all", linger_ms=5)
    started = time.monotonic()
    sent = 0
    futures = []
    try:
        while args.max_events is None or sent < args.max_events:
            due = int((time.monotonic() - started) * args.rate)
            if due <= sent:
                time.sleep(min(0.05, 1 / args.rate))
                continue
            for _ in range(min(due - sent, 1000)):
                event = sim.next_event()
                futures.append(producer.send(args.topic, key=str(event["sensor"]).encode(),
                                             value=json.dumps(event).encode()))
                sent += 1
            if len(futures) > 10_000:
                producer.flush()
                for future in futures:
                    future.get(timeout=30)
                futures.clear()
            if sent % (args.sensors * args.period) < 1000:
                print(f"simulate: {sent} events sent to {args.topic}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        for future in futures:
            future.get(timeout=30)
        producer.close()
    anomalies = [a.__dict__ for a in sim.injected()]
    print(json.dumps({"events": sent, "injected": anomalies}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamdet", description="Anomaly detection on live sensor and event streams."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-config", help="validate config.yaml and print it")
    check.add_argument("--config", default="config.yaml")
    check.set_defaults(func=_check_config)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", default="config.yaml")
    run.add_argument("--max-events", type=int, help="simulator: stop after this many events")
    run.add_argument("--kafka", help="bootstrap HOST:PORT: consume the topics from Kafka")
    run.set_defaults(func=_run)

    simulate = commands.add_parser("simulate", help="produce the simulator stream into Kafka")
    simulate.add_argument("--kafka", required=True, help="bootstrap HOST:PORT")
    simulate.add_argument("--topic", required=True)
    simulate.add_argument("--rate", type=float, default=400.0, help="events per second")
    simulate.add_argument("--max-events", type=int)
    simulate.add_argument("--sensors", type=int, default=4)
    simulate.add_argument("--period", type=int, default=96)
    simulate.add_argument("--noise", type=float, default=0.05)
    simulate.add_argument("--anomaly-every", type=int, default=700)
    simulate.add_argument("--first-anomaly", type=int, default=1500)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.set_defaults(func=_simulate)

    evaluate = commands.add_parser("evaluate", help="measure a detector on a public benchmark")
    benchmarks = evaluate.add_subparsers(dest="benchmark", required=True)

    nab = benchmarks.add_parser("nab", help="any corpus in NAB layout, NAB scoring")
    nab.add_argument("--data", required=True, help="corpus root (data/, labels/, config/)")
    nab.add_argument("--detector", choices=["seq2seq", "vae_lstm"], default="seq2seq")
    nab.add_argument("--out", default="eval/nab")
    nab.add_argument("--params", help="detector parameters as JSON, over the defaults")
    nab.add_argument("--history", type=int, default=1000, help="likelihood history (rows)")
    nab.add_argument("--windows-file", default="combined_windows.json")
    nab.add_argument("--seed", type=int, default=0)
    nab.set_defaults(func=_evaluate_nab)

    vln = benchmarks.add_parser("vae-lstm-nab", help="the VAE-LSTM paper's 5 NAB series")
    vln.add_argument("--data", help="folder of the .npz files (default: shared data)")
    vln.add_argument("--out", default="eval/vae_lstm_nab")
    vln.add_argument("--series", help="comma-separated subset of the 5 series")
    vln.add_argument("--epochs-vae", type=int, default=20)
    vln.add_argument("--epochs-lstm", type=int, default=20)
    vln.add_argument("--threshold-perc", type=float, default=99.0)
    vln.add_argument("--seed", type=int, default=0)
    vln.set_defaults(func=_evaluate_vae_lstm_nab)

    ecg = benchmarks.add_parser("ecg5000", help="alibi-detect's Seq2Seq ECG5000 protocol")
    ecg.add_argument("--data", help="folder with ECG5000_TRAIN.txt / _TEST.txt")
    ecg.add_argument("--out", default="eval/ecg5000")
    ecg.add_argument("--epochs", type=int, default=40)
    ecg.add_argument("--seed", type=int, default=0)
    ecg.set_defaults(func=_evaluate_ecg5000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except StreamdetError as exc:
        print(f"streamdet: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
