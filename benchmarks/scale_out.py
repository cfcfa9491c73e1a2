"""Scale-out: one consumer group of N daemons against one daemon, each pinned to one core,
measured from outside (``/metrics`` and the group's committed offsets only).

For each member count (``--members``, default 1 and 2) a fresh topic of ``--partitions``
partitions gets a warm-up backlog (until every member has scored and finished its start-up
shape checks), then a backlog of ``--events`` events for ``--series`` series at stride 1
(every event completes a window). Throughput is the windows the whole group scored
(``streamdet_windows_scored_total`` summed over members) from the first one after the
backlog was started to the last; the scale-out ratio is N members' rate over N times one
member's. Then the time until the group lag (log end minus committed offset, what KEDA reads)
is 0 on every partition.

    python -m benchmarks.scale_out [--members 1,2] [--events 60000] [--series 1000] [--out F]

Each daemon runs under ``taskset -c K`` (core K of this machine), as one core per pod. The
broker and the producer are not pinned: on a 2-core machine they share the members' cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition

from benchmarks.e2e_kafka import Daemon, broker, produce, topic_config, train_model
from streamdet.core.progress import stderr_progress


def group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Log end minus the group's committed offset, summed over the partitions (KEDA's lag)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)  # never subscribes
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps)
    finally:
        consumer.close(autocommit=False)


def scored(daemons: list[Daemon]) -> float:
    return sum(d.windows_scored() for d in daemons)


def wait_scored(daemons: list[Daemon], target: float, timeout: float) -> tuple[float, float]:
    """Until the group has scored ``target`` windows: (first time any new ones were, end)."""
    base = scored(daemons)
    first = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        now_scored, now = scored(daemons), time.perf_counter()
        if first is None and now_scored > base:
            first = now
        if now_scored >= target:
            return first or now, now
        time.sleep(0.1)
    raise TimeoutError(f"{scored(daemons):.0f} of {target:.0f} windows scored in {timeout:.0f}s")


def owned_partitions(daemon: Daemon) -> int:
    """Partitions the member reports lag for: the ones assigned to it."""
    return sum(1 for k in daemon.metrics() if k.startswith("streamdet_consumer_lag_messages{"))


def run(args, bootstrap: str, admin, tmp: Path, model_dir: Path, members: int) -> dict:
    name = f"scale-{members}-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(name, args.partitions, 1)])
    topic = topic_config(name, model_dir, args.seq_len, args.latent_dim)
    cores = os.cpu_count() or 1
    daemons = [
        Daemon(tmp / f"{name}-{k}", bootstrap, topic, args.batch, cpus=str(k % cores), wait=False)
        for k in range(members)
    ]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        # Warm-up: every member owns partitions, has scored, and its shape checks are done.
        warm = args.series * args.seq_len + 8 * args.batch * members
        produce(bootstrap, name, args.series, warm)
        deadline = time.time() + 300
        while time.time() < deadline:
            owned = [owned_partitions(d) for d in daemons]
            checks = sum(d.total("streamdet_scoring_shape_checks_running") for d in daemons)
            windows = [d.windows_scored() for d in daemons]
            assigned = min(owned) > 0 and sum(owned) == args.partitions
            warmed = scored(daemons) >= warm - args.series * (args.seq_len - 1)
            if assigned and min(windows) > 0 and checks == 0 and warmed:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("the group did not settle (assignment, warm-up, shape checks)")
        target = scored(daemons) + args.events
        started = time.perf_counter()
        produce(bootstrap, name, args.series, args.events, start_step=warm // args.series + 1)
        produced_s = time.perf_counter() - started
        first, last = wait_scored(daemons, target, timeout=3600)
        rate = args.events / (last - first)
        lag_deadline, lag_started = time.time() + 120, time.perf_counter()
        lag = group_lag(bootstrap, f"bench-{name}", name, args.partitions)
        while lag and time.time() < lag_deadline:
            time.sleep(0.5)
            lag = group_lag(bootstrap, f"bench-{name}", name, args.partitions)
        lag_zero_s = time.perf_counter() - lag_started if lag == 0 else None
        per_member = [d.windows_scored() for d in daemons]
    finally:
        for daemon in daemons:
            daemon.stop()
    stderr_progress(
        f"{members} member(s): {rate:.0f} events/s (producing took {produced_s:.1f} s); "
        f"group lag {lag} after the backlog"
    )
    return {
        "members": members,
        "events_per_s": rate,
        "windows_scored_per_member": per_member,
        "producer_seconds": produced_s,
        "group_lag_after": lag,
        "seconds_to_lag_zero": lag_zero_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1,2")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", help="also write the report (JSON) here")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="streamdet-scale-"))
    bootstrap, local = broker(tmp)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    report: dict[str, object] = {
        "cores": os.cpu_count(),
        "partitions": args.partitions,
        "series": args.series,
        "events": args.events,
        "seq_len": args.seq_len,
        "measured_from": "streamdet run processes (taskset -c K each): /metrics and the "
        "group's committed offsets",
    }
    try:
        model_dir = train_model(tmp, args.seq_len, args.latent_dim, args.series)
        runs = [
            run(args, bootstrap, admin, tmp, model_dir, int(n)) for n in args.members.split(",")
        ]
    finally:
        admin.close()
        if local is not None:
            local.stop(tmp / "kafka")
    report["runs"] = runs
    one = next((r for r in runs if r["members"] == 1), None)
    if one is not None:
        for r in runs:
            r["scale_out_ratio"] = r["events_per_s"] / (r["members"] * one["events_per_s"])
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
