"""Chaos soak: daemons in one consumer group under live, labelled traffic while faults are
injected at random, then an audit of every planted anomaly against the alert topic.

A producer process sends sine sensors (zstd-compressed, keyed by sensor, 1 % hostile
messages) at ``--rate`` events/s, with a spike planted on every sensor every
``--spike-every`` steps; it records which spike events the broker acknowledged. Two members
(static membership, ``alerts.delivery`` from ``--delivery``) consume the 4-partition topic.
Every 45-90 s (``--fault-gap``) one fault is injected, chosen at random (seeded):

* ``kill``: a member is SIGKILLed and restarted 3 s later;
* ``broker``: the broker is stopped for 15 s and started again on the same data (only with
  the local jar broker this command starts);
* ``scale``: a third member joins (graceful rebalance), or leaves on SIGTERM if it is in;
* ``sink``: the alert topic refuses writes for 40 s (``min.insync.replicas`` above its
  replication factor), so every alert send fails until it is set back.

Every ``--sample-s`` seconds it samples each member's RSS, ``/metrics`` (consumer lag,
end-to-end latency histogram) and the group lag. After ``--minutes`` the producer stops,
the members catch up and are stopped, and the alert topic is read back (``read_committed``
under exactly-once): **lost** = acknowledged spike events with no alert on a window holding
them; **duplicates** = alerts read more than once (same ``alert_id``); **outside** = alerts
on windows holding no spike. JSON and a PNG timeline are written to ``--out``.

    python -m benchmarks.chaos_soak [--minutes 60] [--delivery exactly_once] [--out eval/chaos]

Every process it stops was started by it, by pid; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition

from benchmarks.e2e_kafka import broker, free_port
from benchmarks.soak import quantile, rss_mb, scrape, total
from streamdet.config import TopicConfig
from streamdet.serving.lifecycle import ModelLifecycle

SEQ_LEN = 16
SENSORS = 16
PARTITIONS = 4
BASE_MS = 1_700_000_000_000
STEP_MS = 60_000
FAULTS = ("kill", "broker", "scale", "sink")


def value(sensor: int, step: int, spike: bool, rng: random.Random) -> float:
    base = math.sin(2 * math.pi * step / 24 + sensor) + 0.05 * rng.gauss(0, 1)
    return round(base + (4.0 if spike else 0.0), 5)


def produce(
    bootstrap: str, topic: str, rate: float, seconds: float, spike_every: int, acked_file: str
) -> None:
    """Paced sensor events; writes the (sensor, step) of every spike the broker acknowledged."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        compression_type="zstd",
        delivery_timeout_ms=600_000,
        request_timeout_ms=30_000,
        max_block_ms=120_000,
    )
    rng = random.Random(0)
    acked: list[tuple[str, int]] = []
    started = time.perf_counter()
    n = 0
    step = 0
    while time.perf_counter() - started < seconds:
        for sensor in range(SENSORS):
            ahead = n / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
            n += 1
            name = f"pump-{sensor}"
            if rng.random() < 0.01:  # hostile messages come in addition to the events
                raw = rng.choice([b"{not json", b'{"sensor": "x", "ts": 1e300, "value": 1}'])
                producer.send(topic, key=name.encode(), value=raw)
            spike = step > 0 and step % spike_every == 0
            event = {
                "sensor": name,
                "ts": BASE_MS + step * STEP_MS,
                "value": value(sensor, step, spike, rng),
            }
            future = producer.send(topic, key=name.encode(), value=json.dumps(event).encode())
            if spike:
                future.add_callback(lambda _meta, pair=(name, step): acked.append(pair))
        step += 1
    producer.flush(timeout=600)
    producer.close()
    Path(acked_file).write_text(json.dumps(acked))


def train_model(store: Path) -> Path:
    topic = TopicConfig.model_validate(member_topic("normal", None))
    model = ModelLifecycle(topic, store, 1, progress=lambda m: None)
    rng = random.Random(99)
    series = {
        f"pump-{s}": np.asarray([[value(s, t, False, rng)] for t in range(600)], np.float32)
        for s in range(SENSORS)
    }
    model.train(series)
    return store / "normal"


def member_topic(name: str, model_dir: Path | None) -> dict[str, Any]:
    detector: dict[str, Any] = {
        "name": "seq2seq",
        "params": {"latent_dim": 8, "epochs": 6, "seed": 0},
        "warmup_events": 400,
    }
    if model_dir is not None:
        detector["model_dir"] = str(model_dir)
    return {
        "name": name,
        "window": {"seq_len": SEQ_LEN},
        "detector": detector,
        "threshold": {"threshold_perc": 100, "margin_perc": 20},
    }


class Member:
    """One daemon of the group: its config, process and log."""

    def __init__(self, name: str, folder: Path, config: dict[str, Any]) -> None:
        self.name = name
        self.folder = folder
        self.port = config["metrics"]["port"]
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = folder / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.unexpected_exits: list[int] = []

    def start(self) -> None:
        with self.log.open("a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamdet.cli", "run", "--config", str(self.config_path)],
                cwd=self.folder,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> int | None:
        if not self.running:
            return None
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


def set_min_isr(bootstrap: str, topic: str, value: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"min.insync.replicas": str(value)}
        )
        admin.alter_configs([resource])
    finally:
        admin.close()


def group_lag(bootstrap: str, group: str, topic: str) -> float:
    """Messages between the group's committed offsets and the log end (nan if unknown)."""
    try:
        # A consumer of the group that never subscribes only reads its commits.
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = consumer.end_offsets(partitions, timeout_ms=5000)
            committed = {tp: consumer.committed(tp, timeout_ms=5000) for tp in partitions}
        finally:
            consumer.close(autocommit=False)
    except Exception:
        return float("nan")
    return float(sum(ends[tp] - (committed[tp] or 0) for tp in partitions))


def read_alerts(bootstrap: str, topic: str, isolation: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level=isolation,
        consumer_timeout_ms=5000,
    )
    alerts = [json.loads(record.value) for record in consumer]
    consumer.close()
    return alerts


def step_of(alert: dict[str, Any]) -> int:
    end = datetime.fromisoformat(alert["window_end"].replace("Z", "+00:00"))
    return (round(end.timestamp() * 1000) - BASE_MS) // STEP_MS


def audit(
    alerts: list[dict[str, Any]], acked: list[tuple[str, int]], spike_every: int
) -> dict[str, Any]:
    """Lost spikes, duplicate alerts and alerts outside every spike's windows."""
    by_series: dict[str, set[int]] = {}
    for alert in alerts:
        by_series.setdefault(alert["series"], set()).add(step_of(alert))
    lost = [
        (series, step)
        for series, step in acked
        if not any(step <= end < step + SEQ_LEN for end in by_series.get(series, ()))
    ]
    ids = Counter(alert["alert_id"] for alert in alerts)
    outside = [
        a for a in alerts if (step_of(a) % spike_every) >= SEQ_LEN or step_of(a) < spike_every
    ]
    return {
        "spikes_acknowledged": len(acked),
        "spikes_lost": len(lost),
        "lost": lost[:50],
        "alerts_read": len(alerts),
        "distinct_alerts": len(ids),
        "duplicates": sum(count - 1 for count in ids.values()),
        "outside_spikes": len(outside),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--spike-every", type=int, default=450)
    parser.add_argument(
        "--delivery", choices=("exactly_once", "at_least_once"), default="exactly_once"
    )
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fault-gap", type=float, nargs=2, default=(45.0, 90.0), metavar=("MIN_S", "MAX_S")
    )
    parser.add_argument("--out", default="eval/chaos")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="streamdet-chaos-"))
    bootstrap, local = broker(tmp)
    try:
        report = soak(args, tmp, bootstrap, local)
    finally:
        if local is not None:
            local.stop(tmp / "kafka")  # the broker this command started, by its pid
    (out / "chaos.json").write_text(json.dumps(report, indent=2, default=str))
    plot(report["samples"], report["faults"], out / "chaos.png")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2, default=str))


def soak(args: argparse.Namespace, tmp: Path, bootstrap: str, local: Any) -> dict[str, Any]:
    stamp = int(time.time())
    topic, alerts_topic, dlq = (f"chaos-{stamp}", f"chaos-{stamp}-alerts", f"chaos-{stamp}-dlq")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topic, PARTITIONS, 1), NewTopic(alerts_topic, 2, 1), NewTopic(dlq, 1, 1)]
    )
    admin.close()
    print(f"chaos: training the model ({tmp})", file=sys.stderr)
    model = train_model(tmp / "trained")
    group = f"g-{topic}"

    def member(name: str) -> Member:
        folder = tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        model_dir = folder / "model"
        if not model_dir.exists():
            shutil.copytree(model, model_dir)
        config = {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": group,
                "group_instance_id": f"chaos-{name}",
                "session_timeout_ms": 10_000,
            },
            "topics": [member_topic(topic, model_dir)],
            "alerts": {
                "topic": alerts_topic,
                "cooldown_s": 0,
                "file": None,
                "stdout": False,
                "delivery": args.delivery,
            },
            "dead_letter": {"topic": dlq},
            "metrics": {"port": free_port()},
            "models": {"store": str(folder / "models")},
        }
        return Member(name, folder, config)

    members = {name: member(name) for name in ("a", "b", "c")}
    acked_file = tmp / "acked.json"
    seconds = args.minutes * 60
    producer = multiprocessing.Process(
        target=produce,
        args=(bootstrap, topic, args.rate, seconds, args.spike_every, str(acked_file)),
    )
    rng = random.Random(args.seed)
    faults: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    previous: dict[str, dict[str, float]] = {}
    exit_codes: dict[str, int | None] = {}
    try:
        members["a"].start()
        members["b"].start()
        time.sleep(15)  # TensorFlow, the model, the group join
        producer.start()
        started = time.time()
        next_fault = started + rng.uniform(*args.fault_gap)
        sink_restore = broker_restore = None
        while time.time() - started < seconds:
            time.sleep(args.sample_s)
            now = time.time()
            for m in members.values():
                if m.process is not None and not m.running and m.name != "c":
                    code = m.process.returncode
                    if code not in (None, -9):
                        m.unexpected_exits.append(code)
                        print(f"chaos: member {m.name} exited {code}; restarting", file=sys.stderr)
                        m.start()
            if sink_restore is not None and now >= sink_restore:
                set_min_isr(bootstrap, alerts_topic, 1)
                sink_restore = None
            if broker_restore is not None and now >= broker_restore:
                local.resume(tmp / "kafka")
                broker_restore = None
            if now >= next_fault and sink_restore is None and broker_restore is None:
                kind = rng.choice(FAULTS if local is not None else ("kill", "scale", "sink"))
                detail = ""
                if kind == "kill":
                    victim = rng.choice([m for m in members.values() if m.running])
                    victim.kill()
                    time.sleep(3)
                    victim.start()
                    detail = victim.name
                elif kind == "broker":
                    local.stop(tmp / "kafka")
                    broker_restore = time.time() + 15
                elif kind == "scale":
                    third = members["c"]
                    if third.running:
                        detail = f"c left (exit {third.stop()})"
                    else:
                        third.start()
                        detail = "c joined"
                else:
                    set_min_isr(bootstrap, alerts_topic, 2)
                    sink_restore = time.time() + 40
                faults.append(
                    {"t_s": round(time.time() - started, 1), "fault": kind, "detail": detail}
                )
                print(f"chaos: t={faults[-1]['t_s']:.0f}s {kind} {detail}", file=sys.stderr)
                next_fault = time.time() + rng.uniform(*args.fault_gap)
            sample: dict[str, Any] = {"t_s": round(now - started, 1), "members": {}}
            for m in members.values():
                if not m.running:
                    continue
                assert m.process is not None
                try:
                    metrics = scrape(m.port)
                except OSError:
                    continue
                before = previous.get(m.name, {})
                if total(metrics, "streamdet_events_consumed_total") < total(
                    before, "streamdet_events_consumed_total"
                ):
                    before = {}  # restarted since the last sample: counters began again
                sample["members"][m.name] = {
                    "pid": m.process.pid,
                    "rss_mb": round(rss_mb(m.process.pid), 1),
                    "lag": total(metrics, "streamdet_consumer_lag_messages"),
                    "p50_s": quantile(before, metrics, 0.5),
                    "p99_s": quantile(before, metrics, 0.99),
                }
                previous[m.name] = metrics
            sample["group_lag"] = (
                group_lag(bootstrap, group, topic) if broker_restore is None else float("nan")
            )
            samples.append(sample)
        # The end: faults stop, the producer finishes, the members catch up.
        if sink_restore is not None:
            set_min_isr(bootstrap, alerts_topic, 1)
        if broker_restore is not None:
            local.resume(tmp / "kafka")
        producer.join(timeout=900)
        for m in members.values():
            if m.name != "c" and not m.running:
                m.start()
        deadline = time.time() + 600
        lag = float("nan")
        while time.time() < deadline:
            lag = group_lag(bootstrap, group, topic)
            if lag == 0:
                break
            time.sleep(5)
        time.sleep(5)
        caught_up = lag == 0
    finally:
        if producer.is_alive():
            producer.terminate()
        for m in members.values():
            exit_codes[m.name] = m.stop()
    isolation = "read_committed" if args.delivery == "exactly_once" else "read_uncommitted"
    alerts = read_alerts(bootstrap, alerts_topic, isolation)
    acked = (
        [tuple(pair) for pair in json.loads(acked_file.read_text())] if acked_file.exists() else []
    )
    return {
        "minutes": args.minutes,
        "rate": args.rate,
        "delivery": args.delivery,
        "seed": args.seed,
        "faults": faults,
        "fault_counts": dict(Counter(f["fault"] for f in faults)),
        "caught_up": caught_up,
        "final_group_lag": lag,
        "exit_codes": exit_codes,
        "member_starts": {m.name: m.starts for m in members.values()},
        "unexpected_exits": {m.name: m.unexpected_exits for m in members.values()},
        **audit(alerts, acked, args.spike_every),
        **summary(samples),
        "samples": samples,
    }


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS drift of the longest-lived process, p99 latency and group lag over the run."""
    lives: dict[int, list[tuple[float, float]]] = {}
    p99: list[float] = []
    for sample in samples:
        for m in sample["members"].values():
            lives.setdefault(m["pid"], []).append((sample["t_s"], m["rss_mb"]))
            if math.isfinite(m["p99_s"]):
                p99.append(m["p99_s"])
    longest = max(lives.values(), key=len, default=[])
    drift = float("nan")
    if len(longest) >= 6:
        third = len(longest) // 3
        first, last = longest[:third], longest[-third:]
        hours = (last[-1][0] - first[0][0]) / 3600
        drift = (np.mean([r for _, r in last]) - np.mean([r for _, r in first])) / max(hours, 1e-9)
    lags = [s["group_lag"] for s in samples if math.isfinite(s["group_lag"])]
    return {
        "rss_drift_mb_per_hour_longest_process": drift,
        "longest_process_minutes": (longest[-1][0] - longest[0][0]) / 60 if longest else 0,
        "p99_s_median_of_samples": float(np.median(p99)) if p99 else float("nan"),
        "p99_s_max": max(p99, default=float("nan")),
        "group_lag_median": float(np.median(lags)) if lags else float("nan"),
        "group_lag_max": max(lags, default=float("nan")),
    }


def plot(samples: list[dict[str, Any]], faults: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for name in ("a", "b", "c"):
        points = [(s["t_s"] / 60, s["members"][name]) for s in samples if name in s["members"]]
        if not points:
            continue
        t = [p[0] for p in points]
        axes[0].plot(t, [p[1]["rss_mb"] for p in points], ".", ms=3, label=f"member {name}")
        axes[2].plot(t, [p[1]["p99_s"] for p in points], ".", ms=3, label=f"p99 {name}")
    axes[1].plot([s["t_s"] / 60 for s in samples], [s["group_lag"] for s in samples])
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend()
    axes[1].set_ylabel("group lag (messages)")
    axes[2].set_ylabel("end-to-end p99 (s)")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("minutes")
    colours = {"kill": "red", "broker": "black", "scale": "green", "sink": "orange"}
    for fault in faults:
        for ax in axes:
            ax.axvline(fault["t_s"] / 60, color=colours[fault["fault"]], alpha=0.3, lw=1)
    fig.suptitle("streamdet chaos soak (red kill -9, black broker, green scale, orange sink)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
