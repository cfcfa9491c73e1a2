"""What tracking many series costs a daemon: ``streamdet run`` as a process, N series
written to its topic, its RSS read from ``/proc`` and its own gauges from ``/metrics``.

    python -m benchmarks.series_memory --series 1000000 --events-per-series 5

A series' window row is allocated whole at its first event (values, timestamps and offsets
of ``seq_len`` events in shared arrays), so a series with a few events costs what a series
with a full window does; ``--events-per-series`` equal to the window's length fills every
window and scores one per series, to check that. Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set,
else starts the project's local jar broker.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic

from benchmarks.e2e_kafka import Daemon, broker, produce, topic_config, train_model
from streamdet.core.progress import stderr_progress


def peak_rss_mb(daemon: Daemon) -> float:
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(args, bootstrap: str, admin: KafkaAdminClient, tmp: Path, model_dir: Path) -> dict:
    name = f"memory-{args.series}-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(name, args.partitions, 1)])
    topic = topic_config(name, model_dir, args.seq_len, args.latent_dim)
    topic["max_series"] = args.series
    topic["max_state_bytes"] = 8 * 2**30
    daemon = Daemon(tmp / name, bootstrap, topic, batch=256)
    try:
        time.sleep(2)  # the scorer's first shape checks run right after start-up
        idle = daemon.rss_mb()
        total = args.series * args.events_per_series
        started = time.perf_counter()
        produce(bootstrap, name, args.series, total)
        stderr_progress(f"{total} events written for {args.series} series")
        consumed = 0.0
        deadline = time.time() + 3600
        while consumed < total and time.time() < deadline:
            time.sleep(1)
            consumed = daemon.total("streamdet_events_consumed_total")
        if consumed < total:
            raise TimeoutError(f"only {consumed:.0f} of {total} events consumed in an hour")
        seconds = time.perf_counter() - started
        metrics = daemon.metrics()
        tracked = sum(v for k, v in metrics.items() if k.startswith("streamdet_series_tracked"))
        state = sum(v for k, v in metrics.items() if k.startswith("streamdet_state_bytes{"))
        report = {
            "series": args.series,
            "events_per_series": args.events_per_series,
            "seq_len": args.seq_len,
            "series_tracked": tracked,
            "windows_scored": daemon.windows_scored(),
            "rss_mb_before_data": idle,
            "rss_mb": daemon.rss_mb(),
            "peak_rss_mb": peak_rss_mb(daemon),
            "state_bytes_per_series": state / max(tracked, 1),
            "seconds_to_consume": seconds,
        }
        report["rss_bytes_per_series"] = (report["rss_mb"] - idle) * 2**20 / args.series
    finally:
        daemon.stop()
    stderr_progress(
        f"{tracked:.0f} series tracked: RSS {report['rss_mb']:.0f} MB (peak "
        f"{report['peak_rss_mb']:.0f} MB, {report['rss_mb_before_data']:.0f} MB before any "
        f"data), {report['rss_bytes_per_series']:.0f} bytes a series"
    )
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--events-per-series", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--out", help="also write the report (JSON) here")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="streamdet-memory-"))
    bootstrap, local = broker(tmp)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        model_dir = train_model(tmp, args.seq_len, args.latent_dim, 1000)
        report = measure(args, bootstrap, admin, tmp, model_dir)
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
