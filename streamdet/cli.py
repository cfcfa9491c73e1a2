"""The ``streamdet`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamdet.core.errors import StreamdetError


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
    from streamdet.io.sinks.alerts import alert_schema

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
    # coordinator moves) too, since "why is nothing consumed" starts there, and the commits
    # of partitions handed to another member.
    logging.basicConfig(
        level=logging.WARNING,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("kafka.coordinator", "streamdet.kafka"):
        logging.getLogger(name).setLevel(logging.INFO)
    raise SystemExit(Application(config).run())


def _simulate(args: argparse.Namespace) -> None:
    import time

    from kafka import KafkaProducer

    from streamdet.io.sources.simulator import SensorSimulator

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

    from streamdet.core.errors import InvalidInputError

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

    from streamdet.io.kafka_client import client_settings
    from streamdet.io.schema_registry import SchemaRegistry
    from streamdet.io.sources.base import Message
    from streamdet.stream.decode import InvalidMessage, decode_timeseries
    from streamdet.stream.record_readers import record_reader

    consumer = KafkaConsumer(
        topic.name,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        **client_settings(config.kafka),
    )
    registry = None
    if topic.format.encoding != "json":
        registry = SchemaRegistry(config.schema_registry)
    read_record = record_reader(topic, registry)
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
            event = decode_timeseries(
                message, topic.format, limits=topic.limits, read_record=read_record
            )
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

    from streamdet.app import n_features
    from streamdet.config import load_config
    from streamdet.core.errors import ConfigError
    from streamdet.core.progress import stderr_progress
    from streamdet.serving.lifecycle import ModelLifecycle

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
    model = ModelLifecycle(
        topic,
        Path(config.models.store),
        n_features(topic),
        stderr_progress,
        keep_versions=config.models.keep_versions,
    )
    bundle = model.train(series)
    print(
        json.dumps(
            {
                "topic": topic.name,
                "model_dir": str(model.directory),
                "version": model.version,
                "training_events": bundle.training_events,
                "training": bundle.detector.training,
            },
            default=str,
        )
    )


def _replay(args: argparse.Namespace) -> None:
    import os

    from streamdet.app import Application
    from streamdet.config import load_config
    from streamdet.core.errors import ConfigError
    from streamdet.io.sinks.alerts import JsonLinesAlertSink
    from streamdet.io.sinks.dead_letter import JsonLinesDeadLetterSink
    from streamdet.io.sinks.scores import CsvScoreSink
    from streamdet.io.sources.replay import ReplaySource

    overrides = {"STREAMDET_MODELS__STORE": args.store} if args.store else {}
    config = load_config(args.config, environ={**os.environ, **overrides})
    names = [t.name for t in config.topics]
    topic = args.topic or (names[0] if len(names) == 1 else None)
    if topic not in names:
        raise ConfigError(
            f"--topic {args.topic!r} is not in config.yaml; allowed: {', '.join(sorted(names))}"
            if args.topic
            else f"config.yaml has {len(names)} topics: name one with --topic "
            f"({', '.join(sorted(names))})"
        )
    app = Application(
        config,
        source=ReplaySource.from_csv(topic, args.file, key=args.series),
        alert_sinks=[JsonLinesAlertSink(config.alerts.file, echo=config.alerts.stdout)],
        dead_letter_sinks=[JsonLinesDeadLetterSink(config.dead_letter.file)],
        serve_metrics=False,
        scores=CsvScoreSink(args.scores) if args.scores else None,
        synchronous=True,
    )
    raise SystemExit(app.run())


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

    replay = commands.add_parser(
        "replay",
        help="backtest: replay a CSV through the daemon (same models, policy, alerts), "
        "deterministically",
    )
    replay.add_argument("file", help="CSV with a header naming the topic's format fields")
    replay.add_argument("--config", default="config.yaml")
    replay.add_argument("--topic", help="the topic the rows belong to (needed if several)")
    replay.add_argument(
        "--series", help="series name for a file without a series column (default: file name)"
    )
    replay.add_argument("--scores", help="write every scored window's score and verdict here")
    replay.add_argument(
        "--store",
        help="model store for this replay (default: the config's models.store, which then "
        "receives the models the replay trains)",
    )
    replay.set_defaults(func=_replay)

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

    from streamdet.commands import evaluate, explain, models

    evaluate.add_parser(commands, _registered)
    models.add_parser(commands)
    explain.add_parser(commands)
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
