"""Soak: the daemon (a subprocess, as users run it) under steady live traffic for a long time.

A producer process sends sensor events at a fixed rate; every ``--churn-every`` seconds a
batch of new series appears (and old ones go silent), and one message in 200 is hostile.
Every ``--sample-s`` seconds the soak samples the daemon's RSS, its consumer lag and its
end-to-end latency (p50/p99 over the interval, from the histogram in ``/metrics``), and at
the end reports drift: RSS and latency of the last third against the first third. JSON and
a PNG timeline are written to ``--out``.

    python -m benchmarks.soak [--minutes 30] [--rate 500] [--out eval/soak]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the project's local jar broker.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from benchmarks.e2e_kafka import broker
from streamdet.config import TopicConfig
from streamdet.serving.lifecycle import ModelLifecycle

SEQ_LEN = 32


def produce(bootstrap: str, topic: str, rate: float, seconds: float, churn_every: float) -> None:
    """Sine sensors at ``rate`` events/s; new series every ``churn_every`` s; 0.5 % poison."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    rng = random.Random(0)
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        ahead = i / rate - (time.perf_counter() - started)
        if ahead > 0:
            time.sleep(ahead)
        generation = int((time.perf_counter() - started) // churn_every)
        sensor = f"s{generation}-{i % 50}"  # 50 live series; a new 50 every churn period
        step = i // 50
        if rng.random() < 0.005:
            raw = rng.choice([b"{not json", b'{"sensor": "x", "ts": 1e300, "value": 1}'])
        else:
            value = math.sin(step / 7.0) + 0.05 * rng.gauss(0, 1) + (3 if step % 997 == 0 else 0)
            raw = json.dumps({"sensor": sensor, "ts": int(time.time() * 1000), "value": value})
            raw = raw.encode()
        producer.send(topic, key=sensor.encode(), value=raw)
        i += 1
    producer.flush()
    producer.close()


def train_model(folder: Path) -> Path:
    topic = TopicConfig.model_validate(
        {
            "name": "soak",
            "window": {"seq_len": SEQ_LEN},
            "detector": {"name": "seq2seq", "params": {"latent_dim": 16, "epochs": 5, "seed": 0}},
            "threshold": {"threshold_perc": 100, "margin_perc": 10},
        }
    )
    rng = np.random.default_rng(0)
    steps = np.arange(3000)
    series = {"a": (np.sin(steps / 7.0) + 0.05 * rng.standard_normal(3000))[:, None]}
    ModelLifecycle(topic, folder, 1, progress=lambda m: None).train(series)
    return folder / "soak"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(name))


def quantile(before: dict, after: dict, q: float) -> float:
    """A quantile of the end-to-end latency observed between two scrapes."""
    prefix = "streamdet_end_to_end_latency_seconds_bucket{le="
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--churn-every", type=float, default=60.0)
    parser.add_argument("--out", default="eval/soak")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="streamdet-soak-"))
    bootstrap, local = broker(tmp)
    topic = f"soak-{os.getpid()}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(n, 2, 1) for n in (topic, f"{topic}-alerts", f"{topic}-dlq")])
    admin.close()
    model = train_model(tmp / "store")
    port = 9300 + os.getpid() % 500
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{topic}"},
        "topics": [
            {
                "name": topic,
                "window": {"seq_len": SEQ_LEN},
                "max_series": 2000,
                "detector": {"name": "seq2seq", "model_dir": str(model)},
                "threshold": {"threshold_perc": 100, "margin_perc": 10},
            }
        ],
        "alerts": {"topic": f"{topic}-alerts", "file": None, "stdout": False},
        "dead_letter": {"topic": f"{topic}-dlq"},
        "metrics": {"port": port},
        "models": {"store": str(tmp / "store")},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    log = (tmp / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "streamdet.cli", "run", "--config", str(tmp / "config.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    seconds = args.minutes * 60
    producer = multiprocessing.Process(
        target=produce, args=(bootstrap, topic, args.rate, seconds, args.churn_every)
    )
    samples = []
    try:
        time.sleep(20)  # start-up: TensorFlow, the model, the group join
        producer.start()
        started = time.time()
        previous = scrape(port)
        while time.time() - started < seconds:
            time.sleep(args.sample_s)
            assert daemon.poll() is None, "the daemon exited during the soak"
            now = scrape(port)
            samples.append(
                {
                    "t_s": round(time.time() - started, 1),
                    "rss_mb": round(rss_mb(daemon.pid), 1),
                    "lag": total(now, "streamdet_consumer_lag_messages"),
                    "p50_s": quantile(previous, now, 0.5),
                    "p99_s": quantile(previous, now, 0.99),
                    "events": total(now, "streamdet_events_consumed_total"),
                    "series": total(now, "streamdet_series_tracked"),
                    "evicted": total(now, "streamdet_series_evicted_total"),
                }
            )
            previous = now
            s = samples[-1]
            print(
                f"soak t={s['t_s']:.0f}s rss={s['rss_mb']:.0f}MB lag={s['lag']:.0f} "
                f"p50={s['p50_s']}s p99={s['p99_s']}s series={s['series']:.0f}",
                file=sys.stderr,
            )
    finally:
        producer.join(timeout=30)
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(timeout=30)
        if local is not None:
            local.stop(tmp / "kafka")
    third = max(len(samples) // 3, 1)

    def mean(key: str, part: list[dict]) -> float:
        values = [s[key] for s in part if math.isfinite(s[key])]
        return float(np.mean(values)) if values else float("nan")

    first, last = samples[:third], samples[-third:]
    report = {
        "minutes": args.minutes,
        "rate": args.rate,
        "exit_code": exit_code,
        "rss_mb_first_third": mean("rss_mb", first),
        "rss_mb_last_third": mean("rss_mb", last),
        "p99_s_first_third": mean("p99_s", first),
        "p99_s_last_third": mean("p99_s", last),
        "lag_max": max((s["lag"] for s in samples), default=0),
        "series_max": max((s["series"] for s in samples), default=0),
        "samples": samples,
    }
    report["rss_drift_mb_per_hour"] = (
        (report["rss_mb_last_third"] - report["rss_mb_first_third"])
        / max((last[-1]["t_s"] - first[0]["t_s"]) / 3600, 1e-9)
        if samples
        else float("nan")
    )
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    plot(samples, out / "soak.png")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [s["rss_mb"] for s in samples])
    axes[0].set_ylabel("RSS (MB)")
    axes[1].plot(t, [s["lag"] for s in samples])
    axes[1].set_ylabel("consumer lag")
    axes[2].plot(t, [s["p50_s"] for s in samples], label="p50")
    axes[2].plot(t, [s["p99_s"] for s in samples], label="p99")
    axes[2].set_ylabel("end-to-end latency (s)")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    fig.suptitle("streamdet soak: live traffic with series churn and 0.5 % poison")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
