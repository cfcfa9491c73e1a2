"""End-to-end daemon throughput and latency through a real Kafka broker, measured from outside.

``streamdet run`` runs as a process, as a user runs it; this benchmark only produces to its
topic and reads what the daemon exposes: ``/metrics`` and the alert topic. Nothing reaches
into the daemon, so nothing can silently stop measuring. For 1 and 1,000 series at stride 1
(every event completes a window) it reports:

* events/s through the whole daemon (consume -> decode -> window -> batch -> Seq2Seq ->
  threshold rule -> outbox -> commit), counted by ``streamdet_windows_scored_total``, beside
  the pure-inference ceiling of the same stored model (``score`` on ready-made batches of
  the daemon's batch size) measured in the same run, and their ratio;
* at half and a quarter of the measured rate, live: p50/p99 produce -> alert latency (a
  spike's production time to its alert record's timestamp on the alert topic; every 97th
  event is a spike, each series alerts once a minute at most) and the daemon's own
  receipt -> acknowledged histogram (``streamdet_end_to_end_latency_seconds``);
* the daemon's RSS per tracked series (RSS with 1,000 series minus RSS before any data), and
  per throughput run its RSS growth and ``streamdet_state_bytes`` per series.

    python -m benchmarks.e2e_kafka [--events 40000] [--seconds 20] [--series 1,1000]
                                   [--no-latency] [--smoke] [--members '[{"name": "pca"}]']

``--members`` scores with an ensemble of the Seq2Seq and those members instead of the
Seq2Seq alone (the ceiling is then the ensemble's).

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the project's local jar broker.
``--smoke`` runs tiny sizes, one throughput and one latency run (the suite runs it so the
benchmark never rots).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import yaml
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from benchmarks.paced_producer import value_of
from streamdet.config import TopicConfig
from streamdet.core.progress import stderr_progress
from streamdet.core.tensorflow import scoring_device
from streamdet.serving.lifecycle import ModelLifecycle

ROOT = Path(__file__).resolve().parents[1]


def broker(tmp: Path) -> tuple[str, object | None]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"], None
    spec = importlib.util.spec_from_file_location("local_kafka", ROOT / "scripts/local_kafka.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bootstrap, _ = module.start(tmp / "kafka")
    return bootstrap, module


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def topic_config(
    name: str, model_dir: Path, seq_len: int, latent_dim: int, members: list[dict] | None = None
) -> dict:
    """The benchmark topic: Seq2Seq alone, or an ensemble of it and ``members``."""
    seq2seq = {"latent_dim": latent_dim, "epochs": 1, "stride": 5, "seed": 0}
    detector: dict = {"name": "seq2seq", "params": seq2seq}
    if members:
        detector = {
            "name": "ensemble",
            "params": {"members": [{"name": "seq2seq", "params": seq2seq}, *members], "seed": 0},
        }
    return {
        "name": name,
        "window": {"seq_len": seq_len},
        "detector": {**detector, "model_dir": str(model_dir)},
        "threshold": {"threshold_perc": 100, "margin_perc": 10},
    }


def train_model(
    folder: Path, seq_len: int, latent_dim: int, n_series: int, members: list[dict] | None
) -> Path:
    """A stored model of the producer's normal data, every series of it (one epoch: speed
    does not depend on the fit; the threshold, the training scores' maximum plus 10 %,
    lets normal windows pass and the producer's spikes alert)."""
    model_dir = folder / "model"
    topic = TopicConfig.model_validate(
        topic_config("bench", model_dir, seq_len, latent_dim, members)
    )
    steps = max(4 * seq_len, 4000 // n_series)
    series = {
        f"s{k}": np.array([[value_of(k, step)] for step in range(steps)], np.float32)
        for k in range(n_series)
    }
    ModelLifecycle(topic, folder, 1, progress=lambda line: None).train(series)
    return model_dir


def inference_ceiling(model_dir: Path, seq_len: int, batch: int, seconds: float) -> float:
    """Windows/s of the stored detector's ``score`` on ready-made batches (same run)."""
    from streamdet.detectors.keras_base import settle_scoring_checks
    from streamdet.serving.bundle import ServingBundle
    from streamdet.serving.store import ModelStore

    store = ModelStore(model_dir)
    detector = ServingBundle.load(store.path_of(store.current() or "")).detector
    data = np.random.default_rng(0).standard_normal((batch, seq_len, 1)).astype(np.float32)
    for _ in range(3):  # a shape is checked once wanted three times
        detector.score(data)
    settle_scoring_checks()  # the shape this batch is best scored at has passed its check
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        detector.score(data)
        calls += 1
    return calls * batch / (time.perf_counter() - started)


def produce(bootstrap, topic, n_series, n_events, rate=None, start_step=0, spike_every=0):
    """Produce from a separate process, as a real producer would."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.paced_producer",
            bootstrap,
            topic,
            str(n_series),
            str(n_events),
            "-" if rate is None else str(rate),
            str(start_step),
            str(spike_every),
        ],
        check=True,
        cwd=ROOT,
    )


class Daemon:
    """``streamdet run`` as a process, and what it exposes."""

    def __init__(
        self,
        folder: Path,
        bootstrap: str,
        topic: dict,
        batch: int,
        cooldown_s: float = 0,
        cpus: str | None = None,
        wait: bool = True,
        max_delay_ms: int = 20,
    ) -> None:
        self.port = free_port()
        self.alerts_topic = f"{topic['name']}-alerts"
        config = {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{topic['name']}"},
            "topics": [topic],
            "alerts": {
                "topic": self.alerts_topic,
                "file": None,
                "stdout": False,
                "cooldown_s": cooldown_s,
            },
            "dead_letter": {"topic": f"{topic['name']}-dlq"},
            "metrics": {"port": self.port},
            "models": {"store": str(folder / "store")},
            "batching": {"max_batch": batch, "max_delay_ms": max_delay_ms},
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        self.log = (folder / "daemon.log").open("w")
        # ``cpus``: the daemon pinned to those cores (``taskset -c``), as a pod's CPU limit.
        pin = ["taskset", "-c", cpus] if cpus is not None else []
        self.process = subprocess.Popen(
            [*pin, sys.executable, "-m", "streamdet.cli", "run", "--config", "config.yaml"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, "the daemon exited; see daemon.log"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the daemon was not ready in time")

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def windows_scored(self) -> float:
        return self.total("streamdet_windows_scored_total")

    def total(self, name: str) -> float:
        """A counter summed over its labels."""
        return sum(v for k, v in self.metrics().items() if k.split("{")[0] == name)

    def scoring_device(self) -> str:
        """The daemon's ``streamdet_scoring_device_info`` labels, as it exposes them."""
        for name in self.metrics():
            if name.startswith("streamdet_scoring_device_info{"):
                return name.partition("{")[2].rstrip("}")
        return "not reported"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def wait_for_windows(daemon: Daemon, target: float, timeout: float) -> tuple[float, float, float]:
    """Scrape until ``target`` windows are scored: (first time any were, time target was
    reached, windows scored). Scrapes every 0.1 s, so each end is known to 0.1 s."""
    first = None
    deadline = time.time() + timeout
    scored = 0.0
    while time.time() < deadline:
        scored = daemon.windows_scored()
        now = time.perf_counter()
        if scored > 0 and first is None:
            first = now
        if scored >= target:
            return first or now, now, scored
        time.sleep(0.1)
    raise TimeoutError(f"only {scored:.0f} of {target:.0f} windows scored in {timeout:.0f}s")


def histogram_quantile(before: dict, after: dict, name: str, q: float) -> float:
    prefix = f"{name}_bucket{{le="
    buckets = sorted(
        (float(k[len(prefix) + 1 : -2]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(prefix)
    )
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def alert_latencies_ms(bootstrap: str, topic: str, since_ms: float) -> np.ndarray:
    """Alert record time minus the window's event time (its production time), in ms."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=3000,
    )
    latencies = []
    for record in consumer:
        alert = json.loads(record.value)
        end = np.datetime64(alert["window_end"].rstrip("Z"), "ms").astype(np.int64)
        if end >= since_ms:
            latencies.append(record.timestamp - int(end))
    consumer.close()
    return np.asarray(latencies, float)


def throughput(args, bootstrap, admin, tmp, model_dir, n_series, ceiling) -> dict:
    """Events/s through the daemon on a backlog of ``3 * args.events`` windows, in its
    steady state: measured from the moment the daemon's start-up work (its scorer's shape
    checks, ``streamdet_scoring_shape_checks_running``) is done to the end of the backlog."""
    name = f"bench-{n_series}-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(name, 1, 1)])
    backlog = 3 * args.events
    total = backlog + n_series * (args.seq_len - 1)
    produce(bootstrap, name, n_series, total)
    topic = topic_config(name, model_dir, args.seq_len, args.latent_dim, args.members)
    daemon = Daemon(tmp / name, bootstrap, topic, args.batch, max_delay_ms=args.max_delay_ms)
    try:
        idle_rss = daemon.rss_mb()
        # A few batches in, the daemon has wanted its batch shape enough to check it.
        began, _, _ = wait_for_windows(daemon, 1, timeout=300)
        wait_for_windows(daemon, min(4 * args.batch, args.events), timeout=300)
        settled = daemon.total("streamdet_scoring_shape_checks_running") == 0
        while not settled:
            time.sleep(0.1)
            settled = daemon.total("streamdet_scoring_shape_checks_running") == 0
        start, first = daemon.windows_scored(), time.perf_counter()
        _, last, scored = wait_for_windows(daemon, backlog, timeout=3600)
        rss = daemon.rss_mb()
        alerts = daemon.total("streamdet_alerts_total")
        state = daemon.total("streamdet_state_bytes")
        device = daemon.scoring_device()
    finally:
        daemon.stop()
    steady = scored - start >= args.events
    if not steady:  # a tiny model (--smoke) ate the backlog before its checks were done
        start, first = 0.0, began - 0.1  # the first scrape was up to 0.1 s after it began
    rate = (scored - start) / (last - first)
    stderr_progress(
        f"{n_series} series: {rate:.0f} events/s end to end ({rate / ceiling:.2f} of the "
        f"ceiling; {alerts:.0f} alerts; scored on {device})"
    )
    return {"events_per_s": rate, "windows_scored": scored - start, "steady_state": steady,
            "scoring_device": device, "ratio_to_ceiling": rate / ceiling, "alerts": alerts,
            "rss_mb": rss,
            "rss_bytes_per_series": (rss - idle_rss) * 2**20 / n_series,
            "state_bytes_per_series": state / n_series}  # fmt: skip


def latency(args, bootstrap, admin, tmp, model_dir, rate) -> dict:
    """Live traffic for 1,000 series at ``rate``, every ``spike_every``-th event a spike:
    how long from a spike's production to its alert on the alert topic. A series alerts
    once a minute at most (the cooldown), so each alert is a new spike's first window."""
    series = 1000 if not args.smoke else 10
    spike_every = 97 if not args.smoke else 7
    name = f"bench-latency-{uuid.uuid4().hex[:6]}"
    # The alert topic exists beforehand, as in a deployment (the first send to a topic the
    # broker auto-creates waits about a second for it).
    admin.create_topics([NewTopic(name, 1, 1), NewTopic(f"{name}-alerts", 1, 1)])
    produce(bootstrap, name, series, series * (args.seq_len - 1))
    topic = topic_config(name, model_dir, args.seq_len, args.latent_dim, args.members)
    daemon = Daemon(
        tmp / name, bootstrap, topic, args.batch, cooldown_s=60, max_delay_ms=args.max_delay_ms
    )
    try:
        idle_rss = daemon.rss_mb()
        produce(bootstrap, name, series, series, start_step=args.seq_len - 1)
        wait_for_windows(daemon, series, timeout=300)
        before, since_ms = daemon.metrics(), time.time() * 1000
        n_events = min(max(int(rate * args.seconds), series), args.events)
        produce(bootstrap, name, series, n_events, rate, args.seq_len, spike_every)
        wait_for_windows(daemon, series + n_events, timeout=300)
        after, full_rss = daemon.metrics(), daemon.rss_mb()
    finally:
        daemon.stop()
    latencies = alert_latencies_ms(bootstrap, daemon.alerts_topic, since_ms)
    histogram = "streamdet_end_to_end_latency_seconds"
    result = {
        "rate_events_per_s": rate,
        "spikes": n_events // spike_every,
        "alerts": len(latencies),
        "produce_to_alert_p50_ms": float(np.percentile(latencies, 50)),
        "produce_to_alert_p99_ms": float(np.percentile(latencies, 99)),
        "daemon_histogram_p50_s_at_most": histogram_quantile(before, after, histogram, 0.5),
        "daemon_histogram_p99_s_at_most": histogram_quantile(before, after, histogram, 0.99),
        "rss_bytes_per_series": (full_rss - idle_rss) * 2**20 / series,
    }
    p50, p99 = result["produce_to_alert_p50_ms"], result["produce_to_alert_p99_ms"]
    stderr_progress(
        f"latency at {rate:.0f} events/s: produce -> alert p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--max-delay-ms", type=int, default=20, help="the daemon's batching.max_delay_ms"
    )
    parser.add_argument(
        "--series", default="1,1000", help="series counts of the throughput runs (comma-separated)"
    )
    parser.add_argument("--no-latency", action="store_true", help="throughput runs only")
    parser.add_argument(
        "--members",
        type=json.loads,
        default=None,
        help="score with an ensemble of Seq2Seq and these members (JSON list), "
        """e.g. '[{"name": "pca"}]'""",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes")
    parser.add_argument("--out", help="also write the report (JSON) here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.seconds, args.seq_len, args.latent_dim = 400, 2.0, 8, 8
    tmp = Path(tempfile.mkdtemp(prefix="streamdet-bench-"))
    bootstrap, local = broker(tmp)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    report: dict[str, object] = {
        "seq_len": args.seq_len,
        "latent_dim": args.latent_dim,
        "max_batch": args.batch,
        "max_delay_ms": args.max_delay_ms,
        "detector": "seq2seq" if not args.members else {"ensemble": ["seq2seq", *args.members]},
        "measured_from": "a streamdet run process: /metrics and the alert topic only",
    }
    try:
        model_dir = train_model(
            tmp, args.seq_len, args.latent_dim, 10 if args.smoke else 1000, args.members
        )
        ceiling = inference_ceiling(model_dir, args.seq_len, args.batch, 1 if args.smoke else 3)
        report["inference_ceiling_windows_per_s"] = ceiling
        report["inference_ceiling_device"] = scoring_device().describe()
        stderr_progress(
            f"pure-inference ceiling: {ceiling:.0f} windows/s at batch {args.batch} on "
            f"{report['inference_ceiling_device']}"
        )
        counts = (10,) if args.smoke else tuple(int(n) for n in args.series.split(","))
        for n_series in counts:
            report[f"series_{n_series}"] = throughput(
                args, bootstrap, admin, tmp, model_dir, n_series, ceiling
            )
        backlog_rate = max(
            v["events_per_s"]
            for k, v in report.items()
            if k.startswith("series_")  # type: ignore[union-attr]
        )
        fractions = (("half", 0.5),) if args.smoke else (("half", 0.5), ("quarter", 0.25))
        if args.no_latency:
            fractions = ()
        for label, fraction in fractions:
            report[f"latency_at_{label}_rate"] = latency(
                args, bootstrap, admin, tmp, model_dir, backlog_rate * fraction
            )
    finally:
        admin.close()
        if local is not None:
            local.stop(tmp / "kafka")
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
