"""End-to-end daemon throughput and latency through a real Kafka broker.

For 1 and 1,000 series at stride 1 (every event completes a window), it measures:

* events/s through the whole daemon (consume -> decode -> window -> batch -> Seq2Seq ->
  threshold -> alerts acknowledged -> commit), with the pure-inference ceiling of the same
  model (``predict`` on ready-made batches of the daemon's batch size) in the same run;
* p50/p99 end-to-end latency (the event's timestamp, set at production, to the moment the
  alerts of its batch are acknowledged) at half the measured throughput;
* RSS of the window store holding 100,000 series of seq_len 50.

    python -m benchmarks.e2e_kafka [--events 40000] [--seconds 20]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the project's local jar broker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from kafka.admin import KafkaAdminClient, NewTopic

from streamdet.app import Application
from streamdet.config import StreamdetConfig
from streamdet.detectors import Seq2SeqDetector
from streamdet.pipeline.decode import Event
from streamdet.pipeline.window_store import WindowStore
from streamdet.progress import silent, stderr_progress
from streamdet.sources.base import Message

ROOT = Path(__file__).resolve().parents[1]


def broker(tmp: Path) -> tuple[str, object | None]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"], None
    spec = importlib.util.spec_from_file_location("local_kafka", ROOT / "scripts/local_kafka.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bootstrap, _ = module.start(tmp / "kafka")
    return bootstrap, module


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_config(bootstrap: str, topic: str, model_dir: Path, seq_len: int, batch: int):
    return StreamdetConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{topic}"},
            "topics": [
                {
                    "name": topic,
                    "window": {"seq_len": seq_len},
                    "detector": {"name": "seq2seq", "model_dir": str(model_dir)},
                }
            ],
            "alerts": {"topic": f"{topic}-alerts", "file": None, "stdout": False, "cooldown_s": 0},
            "dead_letter": {"topic": f"{topic}-dlq"},
            "batching": {"max_batch": batch, "max_delay_ms": 20},
        }
    )


class Probe:
    """Wraps the app's scoring and publishing to time windows end to end."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.first = self.last = 0.0
        self.windows = 0
        self.latencies_ms: list[float] = []
        self._pending: list[int] = []
        score_topic, publish = app._score_topic, app.alert_sink.publish

        def timed_score(runtime, windows):
            if not self.first:
                self.first = time.perf_counter()
            self._pending.extend(w.end_ts_ms for w in windows)
            return score_topic(runtime, windows)

        def timed_publish(alerts):
            publish(alerts)
            now_ms = time.time() * 1000
            self.latencies_ms.extend(now_ms - ts for ts in self._pending)
            self.windows += len(self._pending)
            self._pending.clear()
            self.last = time.perf_counter()

        app._score_topic = timed_score
        app.alert_sink.publish = timed_publish


def produce(
    bootstrap: str,
    topic: str,
    n_series: int,
    n_events: int,
    rate: float | None,
    start_step: int = 0,
) -> None:
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
        ],
        check=True,
        cwd=ROOT,
    )


def run_app(app: Application) -> threading.Thread:
    thread = threading.Thread(
        target=app.run, kwargs={"install_signal_handlers": False}, daemon=True
    )
    thread.start()
    return thread


def measure_latency(bootstrap: str, admin, model_dir: Path, args, rate: float) -> dict:
    """Live traffic for 1,000 series at ``rate``: latency percentiles and sustained rate."""
    topic = f"bench-latency-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 1, 1)])
    produce(bootstrap, topic, 1000, 1000 * (args.seq_len - 1), rate=None)
    app = Application(
        make_config(bootstrap, topic, model_dir, args.seq_len, args.batch),
        progress=silent,
        serve_metrics=False,
    )
    probe = Probe(app)
    thread = run_app(app)
    # One more event per series completes every window; then wait until the daemon has
    # drained the backlog (no new windows for 2 s) so the measured phase starts at lag 0.
    produce(bootstrap, topic, 1000, 1000, rate=None, start_step=args.seq_len - 1)
    settled, last = 0, -1
    while settled < 4:
        time.sleep(0.5)
        settled = settled + 1 if probe.windows == last and probe.windows > 0 else 0
        last = probe.windows
    probe.latencies_ms.clear()
    scored_before, started = probe.windows, time.perf_counter()
    produce(
        bootstrap, topic, 1000, int(rate * args.seconds), rate=rate, start_step=args.seq_len + 1
    )
    produced_for = time.perf_counter() - started
    time.sleep(3)
    app.stop()
    thread.join(30)
    lat = np.asarray(probe.latencies_ms)
    result = {
        "rate_events_per_s": rate,
        "produced": int(rate * args.seconds),
        "scored": probe.windows - scored_before,
        "scored_per_s_while_producing": (probe.windows - scored_before) / (produced_for + 3),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }
    stderr_progress(
        f"latency at {rate:.0f} events/s: p50 {result['p50_ms']:.0f} ms, "
        f"p99 {result['p99_ms']:.0f} ms ({result['scored']} of "
        f"{result['produced']} windows scored)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rss-series", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="streamdet-bench-"))
    bootstrap, local = broker(tmp)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    report: dict[str, object] = {
        "seq_len": args.seq_len,
        "latent_dim": args.latent_dim,
        "max_batch": args.batch,
    }
    try:
        stderr_progress("training the benchmark model (1 epoch: speed does not depend on fit)")
        train = np.sin(np.arange(4000) / 7.0)[:, None].astype(np.float32)
        detector = Seq2SeqDetector(
            seq_len=args.seq_len, latent_dim=args.latent_dim, epochs=1, stride=5, seed=0
        )
        detector.fit(train)
        detector.infer_threshold(train, threshold_perc=100, level="instance")
        model_dir = detector.save(tmp / "model")

        batch = np.random.default_rng(0).standard_normal((args.batch, args.seq_len, 1))
        batch = batch.astype(np.float32)
        detector.predict(batch)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < 3:
            detector.predict(batch)
            calls += 1
        ceiling = calls * args.batch / (time.perf_counter() - started)
        report["inference_ceiling_windows_per_s"] = ceiling
        stderr_progress(f"pure-inference ceiling: {ceiling:.0f} windows/s at batch {args.batch}")

        for n_series in (1, 1000):
            topic = f"bench-{n_series}-{uuid.uuid4().hex[:6]}"
            admin.create_topics([NewTopic(topic, 1, 1)])
            total = args.events + n_series * (args.seq_len - 1)
            produce(bootstrap, topic, n_series, total, rate=None)
            app = Application(
                make_config(bootstrap, topic, model_dir, args.seq_len, args.batch),
                progress=silent,
                serve_metrics=False,
            )
            probe = Probe(app)
            thread = run_app(app)
            deadline = time.time() + 600
            while probe.windows < args.events and time.time() < deadline:
                time.sleep(0.2)
            app.stop()
            thread.join(30)
            rate = probe.windows / max(probe.last - probe.first, 1e-9)
            report[f"series_{n_series}"] = {
                "events_per_s": rate,
                "windows_scored": probe.windows,
                "ratio_to_ceiling": rate / ceiling,
            }
            stderr_progress(
                f"{n_series} series: {rate:.0f} events/s end to end "
                f"({rate / ceiling:.2f} of the ceiling)"
            )

        backlog_rate = report["series_1000"]["events_per_s"]  # type: ignore[index]
        for label, fraction in (("half", 0.5), ("quarter", 0.25)):
            report[f"latency_at_{label}_rate"] = measure_latency(
                bootstrap, admin, model_dir, args, backlog_rate * fraction
            )
    finally:
        admin.close()
        if local is not None:
            local.stop(tmp / "kafka")

    before = rss_mb()
    store = WindowStore(args.seq_len, 1)
    value = np.zeros(1, np.float32)
    for step in range(args.seq_len):
        for s in range(args.rss_series):
            store.add_all(Event(f"s{s}", step, value, Message("t", 0, step, None, b"", step)))
    after = rss_mb()
    report["rss_window_store"] = {
        "series": args.rss_series,
        "rss_mb_added": after - before,
        "rss_mb_total": after,
        "bytes_per_series": (after - before) * 2**20 / args.rss_series,
    }
    stderr_progress(
        f"{args.rss_series} series: +{after - before:.0f} MB RSS (total {after:.0f} MB)"
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
