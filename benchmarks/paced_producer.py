"""Produce synthetic sensor events to Kafka at a fixed rate, from its own process.

Used by ``benchmarks.e2e_kafka`` so that production does not share the daemon's process
(and GIL). Each event carries its production time in ``ts`` (epoch ms).

    python -m benchmarks.paced_producer BOOTSTRAP TOPIC N_SERIES N_EVENTS [RATE] [START_STEP]
        [SPIKE_EVERY]

Every ``SPIKE_EVERY``-th event (0: none) is lifted by ``SPIKE``: an anomaly to alert on.
"""

from __future__ import annotations

import json
import math
import sys
import time

from kafka import KafkaProducer

SPIKE = 5.0


def value_of(series: int, step: int) -> float:
    """Series ``series``'s normal value at ``step``: a sine, offset per series."""
    return math.sin(step / 7.0) + 0.1 * (series % 10)


def produce(
    bootstrap: str,
    topic: str,
    n_series: int,
    n_events: int,
    rate: float | None = None,
    start_step: int = 0,
    spike_every: int = 0,
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    # Connected, with the topic's metadata, before the first event is stamped: the client's
    # start-up is not the daemon's latency.
    producer.partitions_for(topic)
    started = time.perf_counter()
    for i in range(n_events):
        if rate is not None:
            ahead = i / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        series = i % n_series
        step = start_step + i // n_series
        value = value_of(series, step)
        if spike_every and i % spike_every == spike_every - 1:
            value += SPIKE
        body = {"sensor": f"s{series}", "ts": int(time.time() * 1000), "value": value}
        producer.send(topic, key=body["sensor"].encode(), value=json.dumps(body).encode())
    producer.flush()
    producer.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    produce(
        args[0],
        args[1],
        int(args[2]),
        int(args[3]),
        float(args[4]) if len(args) > 4 and args[4] != "-" else None,
        int(args[5]) if len(args) > 5 else 0,
        int(args[6]) if len(args) > 6 else 0,
    )
