"""The ``streamdet`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
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
        edge_window=args.edge_window,
        log_scale=args.likelihood_log_scale,
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
        window=args.window,
        n_windows=args.n_windows,
        code_size=args.code_size,
        raw=args.raw,
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

    result = ecg5000.run(
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        teacher_forcing=args.teacher_forcing,
        page_defaults=args.page_defaults,
    )
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


def _evaluate_kdd99(args: argparse.Namespace) -> None:
    from streamdet.evaluation import kdd99

    result = kdd99.run(
        args.data,
        args.out,
        protocol=args.protocol,
        page_defaults=args.page_defaults,
        epochs=args.epochs,
        seeds=args.seeds,
        seed=args.seed,
    )
    m, p = result["metrics"], result["published"]
    print(
        _table(
            [
                [
                    f"streamdet vaegmm ({args.protocol})",
                    m["precision"],
                    m["recall"],
                    m["f1"],
                    m["auc"],
                ],
                [p["source"], p.get("precision", ""), p.get("recall", ""), p["f1"], ""],
            ],
            ["", "precision", "recall", "F1", "AUC"],
        )
    )


def _evaluate_tabular(args: argparse.Namespace) -> None:
    from streamdet.evaluation import tabular

    result = tabular.run(args.npz, args.out, epochs=args.epochs, seed=args.seed)
    rows = [
        [name, result[key]["auroc"], result[key]["auprc"], result[key]["f1"]]
        for name, key in (("streamdet vaegmm", "vaegmm"), ("IsolationForest", "isolation_forest"))
    ]
    print(_table(rows, ["", "AUROC", "AUPRC", "F1 @ contamination"]))


def _evaluate_mnist(args: argparse.Namespace) -> None:
    if args.task == "adversarial":
        _evaluate_mnist_adversarial(args)
        return
    from streamdet.evaluation import mnist

    result = mnist.run(
        args.data,
        args.out,
        digit=args.digit,
        epochs=args.epochs,
        score_loss=args.score_loss,
        train_limit=args.train_limit,
        params=json.loads(args.params) if args.params else None,
        recon_epochs=tuple(int(e) for e in args.recon_epochs.split(",") if e),
        seed=args.seed,
    )
    print(
        _table(
            [
                *[
                    [
                        f"streamdet image_vae (digit {args.digit}, {loss} score)",
                        by_loss["auroc"],
                        by_loss["auprc"],
                        by_loss["operating_point"]["recall"],
                        by_loss["operating_point"]["false_positive_rate"],
                    ]
                    for loss, by_loss in result["by_score_loss"].items()
                ],
                [
                    "seed project",
                    "",
                    "",
                    result["seed_project"]["recall"],
                    result["seed_project"]["false_positive_rate"],
                ],
            ],
            ["", "AUROC", "AUPRC", "recall", "FPR"],
        )
    )


def _evaluate_mnist_adversarial(args: argparse.Namespace) -> None:
    from streamdet.evaluation import mnist_adversarial

    result = mnist_adversarial.run(
        args.data,
        args.out,
        epochs=args.epochs,
        classifier_epochs=args.classifier_epochs,
        n_test=args.n_test,
        train_limit=args.train_limit,
        cw_iterations=args.cw_iterations,
        pgd_iterations=args.pgd_iterations,
        detector_params=json.loads(args.params) if args.params else None,
        seed=args.seed,
    )
    rows = [
        [
            name,
            a["attack_success_rate"],
            a["auroc"],
            a["accuracy_under_attack"],
            a["accuracy_after_correction"],
            a["share_of_clean_accuracy_restored"],
        ]
        for name, a in result["attacks"].items()
    ]
    print(
        f"classifier test accuracy {result['classifier']['test_accuracy']:.4f}; "
        f"clean accuracy on the attacked images {result['clean']['accuracy']:.4f}, "
        f"{result['clean']['accuracy_after_correction']:.4f} after correct()"
    )
    print(
        _table(
            rows,
            ["attack", "success", "AUROC", "accuracy", "corrected", "share restored"],
        )
    )


def _registered(kind: str) -> Any:
    """An argparse ``type`` accepting the registered detectors of ``kind`` (read when the
    option is used: importing the registry loads TensorFlow)."""

    def parse(name: str) -> str:
        from streamdet.detectors import detectors_for

        allowed = detectors_for(kind)
        if name not in allowed:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a registered {kind} detector; allowed: {', '.join(allowed)}"
            )
        return name

    parse.__name__ = f"{kind} detector"
    return parse


def _schema(args: argparse.Namespace) -> None:
    from streamdet.sinks.alerts import alert_schema

    text = json.dumps(alert_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)


def _check_config(args: argparse.Namespace) -> None:
    from streamdet.config import load_config

    config = load_config(args.config)
    print(json.dumps(config.model_dump(mode="json"), indent=2))


def _run(args: argparse.Namespace) -> None:
    import logging
    import os
    import signal

    # Until the loop takes over SIGTERM (after TensorFlow and the model are loaded), a stop
    # request ends start-up cleanly: nothing is consumed yet, so nothing is lost.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from streamdet.app import Application
    from streamdet.config import load_config

    overrides = {}
    if args.max_events:
        overrides["STREAMDET_SIMULATOR__MAX_EVENTS"] = str(args.max_events)
    if args.kafka:
        overrides["STREAMDET_KAFKA__BOOTSTRAP_SERVERS"] = args.kafka

    config = load_config(args.config, environ={**os.environ, **overrides})
    # Library warnings reach the operator; group membership changes (joins, assignments,
    # coordinator moves) too, since "why is nothing consumed" starts there.
    logging.basicConfig(
        level=logging.WARNING,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("kafka.coordinator").setLevel(logging.INFO)
    raise SystemExit(Application(config).run())


def _simulate(args: argparse.Namespace) -> None:
    import time

    from kafka import KafkaProducer

    from streamdet.sources.simulator import SensorSimulator

    sim = SensorSimulator(
        args.sensors,
        args.period,
        args.noise,
        args.anomaly_every,
        args.seed,
        first_anomaly=args.first_anomaly,
    )
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
            burst = min(due - sent, 1000)
            if args.max_events is not None:
                burst = min(burst, args.max_events - sent)
            for _ in range(burst):
                event = sim.next_event()
                futures.append(
                    producer.send(
                        args.topic,
                        key=str(event["sensor"]).encode(),
                        value=json.dumps(event).encode(),
                    )
                )
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


def _read_training_csv(path: str, fmt: Any, limit: int | None) -> dict[str, Any]:
    import csv

    import numpy as np

    from streamdet.errors import InvalidInputError

    series: dict[str, list[list[float]]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in fmt.value_fields if f not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(
                f"{path}: missing column(s) {missing}; the topic's value_fields are "
                f"{list(fmt.value_fields)} (found {reader.fieldnames})"
            )
        for n, row in enumerate(reader, start=2):
            if limit is not None and n - 2 >= limit:
                break
            name = row.get(fmt.series_key or "", "") or "default"
            try:
                values = [float(row[f]) for f in fmt.value_fields]
            except ValueError as exc:
                raise InvalidInputError(f"{path} line {n}: {exc}") from None
            if not all(np.isfinite(values)):
                raise InvalidInputError(f"{path} line {n}: NaN or inf in {values}")
            series.setdefault(name, []).append(values)
    return {k: np.asarray(v, dtype=np.float32) for k, v in series.items()}


def _read_training_kafka(config: Any, topic: Any, limit: int | None) -> dict[str, Any]:
    import numpy as np
    from kafka import KafkaConsumer

    from streamdet.kafka_client import client_settings
    from streamdet.pipeline.decode import InvalidMessage, decode_timeseries
    from streamdet.sources.base import Message

    consumer = KafkaConsumer(
        topic.name,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        **client_settings(config.kafka),
    )
    series: dict[str, list[Any]] = {}
    read = invalid = 0
    for record in consumer:
        message = Message(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value or b"",
            record.timestamp,
        )
        try:
            event = decode_timeseries(message, topic.format, limits=topic.limits)
        except InvalidMessage:
            invalid += 1
            continue
        series.setdefault(event.series, []).append(event.values)
        read += 1
        if read % 10_000 == 0:
            print(f"train: read {read} events from {topic.name}", file=sys.stderr)
        if limit is not None and read >= limit:
            break
    consumer.close()
    print(f"train: {read} events read, {invalid} invalid skipped", file=sys.stderr)
    return {k: np.stack(v) for k, v in series.items()}


def _train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from streamdet.config import load_config
    from streamdet.errors import ConfigError
    from streamdet.pipeline.models import TopicModel
    from streamdet.progress import stderr_progress

    config = load_config(args.config)
    topics = {t.name: t for t in config.topics}
    if args.topic not in topics:
        raise ConfigError(
            f"--topic {args.topic!r} is not in config.yaml; allowed: {', '.join(sorted(topics))}"
        )
    topic = topics[args.topic]
    if args.from_file:
        series = _read_training_csv(args.from_file, topic.format, args.max_events)
    else:
        if not config.kafka.bootstrap_servers:
            raise ConfigError("--from-kafka needs kafka.bootstrap_servers in config.yaml")
        series = _read_training_kafka(config, topic, args.max_events)
    model = TopicModel(
        topic, Path(config.models.store), len(topic.format.value_fields), stderr_progress
    )
    detector = model.train(series)
    print(
        json.dumps(
            {"topic": topic.name, "model_dir": str(model.directory), "training": detector.training},
            default=str,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamdet", description="Anomaly detection on live sensor and event streams."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-config", help="validate config.yaml and print it")
    check.add_argument("--config", default="config.yaml")
    check.set_defaults(func=_check_config)

    schema = commands.add_parser("schema", help="print the alert JSON Schema")
    schema.add_argument("--out", help="write it to this file (docs/alert.schema.json)")
    schema.set_defaults(func=_schema)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", default="config.yaml")
    run.add_argument("--max-events", type=int, help="simulator: stop after this many events")
    run.add_argument("--kafka", help="bootstrap HOST:PORT: consume the topics from Kafka")
    run.set_defaults(func=_run)

    train = commands.add_parser("train", help="train a topic's model offline into the store")
    train.add_argument("--config", default="config.yaml")
    train.add_argument("--topic", required=True)
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", help="CSV with the topic's series and value columns")
    source.add_argument("--from-kafka", action="store_true", help="read the topic from Kafka")
    train.add_argument("--max-events", type=int)
    train.set_defaults(func=_train)

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
    nab.add_argument(
        "--detector",
        type=_registered("timeseries"),
        default="seq2seq",
        help="a registered timeseries detector (default seq2seq)",
    )
    nab.add_argument("--out", default="eval/nab")
    nab.add_argument("--params", help="detector parameters as JSON, over the defaults")
    nab.add_argument("--history", type=int, default=2000, help="likelihood history (rows)")
    nab.add_argument(
        "--edge-window",
        type=int,
        default=400,
        help="keep a score only if it beats the last N rows (0: off)",
    )
    nab.add_argument(
        "--likelihood-log-scale",
        action="store_true",
        help="fit the likelihood's history in log1p space",
    )
    nab.add_argument("--windows-file", default="combined_windows.json")
    nab.add_argument("--seed", type=int, default=0)
    nab.set_defaults(func=_evaluate_nab)

    vln = benchmarks.add_parser("vae-lstm-nab", help="the VAE-LSTM paper's 5 NAB series")
    vln.add_argument("--data", help="folder of the .npz files (default: shared data)")
    vln.add_argument("--out", default="eval/vae_lstm_nab")
    vln.add_argument("--series", help="comma-separated subset of the 5 series")
    vln.add_argument("--window", type=int, default=48, help="points per VAE window (l)")
    vln.add_argument("--n-windows", type=int, default=12, help="windows per LSTM sequence (k)")
    vln.add_argument("--code-size", type=int, default=6, help="VAE code size")
    vln.add_argument(
        "--raw",
        help="build the 5 series from a NAB-layout corpus (e.g. ../shared/data/nab) with the "
        "notebook's splits, instead of reading the .npz files",
    )
    vln.add_argument("--epochs-vae", type=int, default=20)
    vln.add_argument("--epochs-lstm", type=int, default=20)
    vln.add_argument("--threshold-perc", type=float, default=99.0)
    vln.add_argument("--seed", type=int, default=0)
    vln.set_defaults(func=_evaluate_vae_lstm_nab)

    ecg = benchmarks.add_parser("ecg5000", help="alibi-detect's Seq2Seq ECG5000 protocol")
    ecg.add_argument("--data", help="folder with ECG5000_TRAIN.txt / _TEST.txt")
    ecg.add_argument("--out", default="eval/ecg5000")
    ecg.add_argument("--epochs", type=int, default=40)
    ecg.add_argument(
        "--page-defaults",
        action="store_true",
        help="OutlierSeq2Seq as alibi-detect's page uses it (latent 100, fit defaults)",
    )
    ecg.add_argument("--seed", type=int, default=0)
    ecg.add_argument(
        "--teacher-forcing",
        action="store_true",
        help="train the decoder on true previous values (ablation)",
    )
    ecg.set_defaults(func=_evaluate_ecg5000)
    kdd = benchmarks.add_parser("kdd99", help="VAEGMM on KDD Cup 99 (alibi or DAGMM protocol)")
    kdd.add_argument("--data", help="folder with kddcup.data_10_percent.gz and kddcup.names")
    kdd.add_argument("--protocol", choices=["alibi", "dagmm"], default="alibi")
    kdd.add_argument("--out", default="eval/kdd99")
    kdd.add_argument("--epochs", type=int, default=30)
    kdd.add_argument("--seeds", type=int, default=5, help="dagmm: seeds to average over")
    kdd.add_argument(
        "--page-defaults",
        action="store_true",
        help="alibi protocol: OutlierVAEGMM with alibi-detect's page networks and defaults",
    )
    kdd.add_argument("--seed", type=int, default=0)
    kdd.set_defaults(func=_evaluate_kdd99)

    tab = benchmarks.add_parser("tabular", help="VAEGMM vs IsolationForest on a labelled table")
    tab.add_argument("--npz", required=True, help="arrays X (rows x features) and y (1 = anomaly)")
    tab.add_argument("--out", default="eval/tabular")
    tab.add_argument("--epochs", type=int, default=50)
    tab.add_argument("--seed", type=int, default=0)
    tab.set_defaults(func=_evaluate_tabular)

    mn = benchmarks.add_parser("mnist", help="image VAE: MNIST digit hold-out")
    mn.add_argument(
        "--task",
        choices=["digit-holdout", "adversarial"],
        default="digit-holdout",
        help="digit-holdout: image VAE; adversarial: CNN + attacks + adversarial VAE",
    )
    mn.add_argument("--digit", type=int, default=5, choices=range(10))
    mn.add_argument("--data", help="folder with the MNIST files (default: shared data)")
    mn.add_argument("--out", default="eval/mnist")
    mn.add_argument("--epochs", type=int, default=10, help="VAE training epochs")
    mn.add_argument("--seed", type=int, default=0)
    mn.add_argument(
        "--score-loss",
        choices=["bce", "mse"],
        default="mse",
        help="digit-holdout: reconstruction loss used as the score (both are reported)",
    )
    adv = mn.add_argument_group("adversarial task")
    adv.add_argument("--classifier-epochs", type=int, default=3)
    adv.add_argument("--n-test", type=int, default=1000, help="test images to attack")
    mn.add_argument("--train-limit", type=int, help="train on a random N of the training images")
    adv.add_argument("--cw-iterations", type=int, default=100)
    adv.add_argument("--pgd-iterations", type=int, default=40)
    mn.add_argument(
        "--params",
        help="detector parameters as JSON (image_vae for digit-holdout, e.g. "
        "'{\"beta\": 0.0}'; adversarial_vae for adversarial)",
    )
    mn.add_argument(
        "--recon-epochs",
        default="1,5,10",
        help="digit-holdout: epochs whose reconstructions are drawn (comma-separated)",
    )
    mn.set_defaults(func=_evaluate_mnist)
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
