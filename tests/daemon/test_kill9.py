"""kill -9, five times, while a labelled stream flows on a real broker: no alert lost."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import defaultdict

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from tests.daemon.test_faults import (
    SEQ_LEN,
    daemon_config,
    metric,
    step_of,
    stream,
    trained_model,
)
from tests.daemon.test_outages import SENSORS, all_caught, false_alarms
from tests.daemon_helpers import AlertReader, start_daemon, stop_daemon, wait_until_ready

pytestmark = pytest.mark.kafka
__all__ = ["trained_model"]  # the module-scoped fixture, shared with test_faults


def test_five_sigkills_while_50k_events_flow_lose_no_alert(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    five_sigkills(kafka_bootstrap, new_topic, tmp_path, trained_model, "at_least_once", stride=3)


def five_sigkills(
    kafka_bootstrap, new_topic, tmp_path, trained_model, delivery: str, stride: int = 1
) -> None:
    """kill -9 at five random moments while a labelled stream of 50,400 events is produced;
    each restart (static membership: it gets its partitions back at once) resumes from the
    last commit. Every planted spike is alerted at least once; a window alerted twice keeps
    its alert id; every partition ends fully scored. With ``stride`` > 1 each restart scores
    the same windows as the run before it (a series' alerted windows keep one phase), so a
    re-raised alert keeps its id. Exactly-once: a read_committed
    subscriber sees no alert twice (the transactional id comes from the static member id,
    so each restart aborts what the killed process left open)."""
    topic = new_topic("crash", partitions=2)
    alerts_topic, dlq = new_topic("alerts"), new_topic("dlq")
    steps = 6300
    spikes = set(range(400, steps - SEQ_LEN, 450))
    events = stream(range(steps), spikes, seed=5, sensors=SENSORS)
    folder = tmp_path / "crash"
    base = daemon_config(
        folder,
        kafka_bootstrap,
        topic,
        trained_model,
        alerts=alerts_topic,
        dlq=dlq,
        kafka={"group_instance_id": "streamdet-0"},
        delivery={"delivery": delivery},
        window={"seq_len": SEQ_LEN, "stride": stride},
        # Commits 2 s apart: most kills land with alerts published (or, exactly once, in
        # the open transaction) and not committed.
        commit_interval_ms=2_000,
    )
    config = yaml.safe_load(base.read_text())

    lives = 6  # five killed, the sixth finishes
    life_ready = [threading.Event() for _ in range(lives)]
    producer_done = threading.Event()

    def produce_paced() -> None:
        """A sixth of the stream for each life, once it is ready: every life has fresh
        events to score and is killed while they flow, however fast the machine."""
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        chunk = -(-len(events) // lives)
        for life in range(lives):
            if not life_ready[life].wait(180):
                return
            for n, (key, raw) in enumerate(events[life * chunk : (life + 1) * chunk]):
                producer.send(topic, key=key, value=raw)
                if n % 500 == 499:
                    time.sleep(0.25)  # ~2,000 events/s
        producer.flush()
        producer.close()
        producer_done.set()

    feeder = threading.Thread(target=produce_paced, daemon=True)
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    reader = AlertReader(kafka_bootstrap, alerts_topic, isolation)
    log = folder / "daemon.log"
    rng = random.Random(11)
    kills = []
    feeder.start()
    try:
        for life in range(lives - 1):
            daemon = start_daemon(base, log)
            wait_until_ready(config["metrics"]["port"], daemon, log, 120)
            life_ready[life].set()
            # The kill waits for what it must interrupt (this life scoring its sixth of the
            # stream), then lands up to 1.5 commit intervals later: most kills find alerts
            # published (or in the open transaction) and not committed.
            scored_windows(config["metrics"]["port"], daemon, log, topic)
            delay = rng.uniform(0.2, 3.0)
            time.sleep(delay)
            assert daemon.poll() is None, log.read_text()[-3000:]
            daemon.kill()
            daemon.wait(10)
            kills.append(round(delay, 1))
        daemon = start_daemon(base, log)
        wait_until_ready(config["metrics"]["port"], daemon, log, 120)
        life_ready[-1].set()
        assert producer_done.wait(120)
        reader.wait_for(lambda got: all_caught(got, spikes), 300, daemon, log)
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}")
        deadline = time.time() + 120
        scored = 0
        while time.time() < deadline and scored < len(events):
            time.sleep(2)
            scored = 0
            for partition in range(2):
                committed = consumer.committed(TopicPartition(topic, partition), metadata=True)
                if committed is not None:
                    scored += json.loads(committed.metadata)["scored_through"] + 1
        consumer.close()
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    assert scored == len(events)  # nothing lost: every offset of both partitions scored
    ids = defaultdict(set)
    for alert in reader.alerts:
        ids[(alert["partition"], alert["window_end_offset"])].add(alert["alert_id"])
    assert all(len(v) == 1 for v in ids.values())
    phases = {(a["series"], step_of(a) % stride) for a in reader.alerts}
    assert len(phases) == len({series for series, _ in phases})  # one phase a series
    duplicates = len(reader.alerts) - len(ids)
    wrong = false_alarms(reader.alerts, spikes)
    if delivery == "exactly_once":
        assert duplicates == 0
    print(
        f"RELIABILITY kill-9 x5 ({delivery}, stride {stride}): {len(events)} events, "
        f"kills {kills} s after each life's first scored windows, "
        f"{len(spikes) * len(SENSORS)} spike/sensor pairs all alerted, {len(reader.alerts)} "
        f"alerts ({duplicates} repeated with the same id), {len(wrong)} outside spikes, "
        f"{len(events) - scored} events unscored"
    )
    assert len(wrong) <= 2, wrong


def scored_windows(port: int, daemon, log, topic: str, timeout: float = 120) -> None:
    """Until this daemon's ``/metrics`` counts windows it scored for ``topic``."""
    name = f'streamdet_windows_scored_total{{detector="seq2seq",topic="{topic}"}}'
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert daemon.poll() is None, log.read_text()[-3000:]
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        except OSError:
            text = b""
        if metric(text.decode(), name) > 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"no window scored within {timeout:.0f}s\n{log.read_text()[-3000:]}")
