"""kill -9, five times, while a labelled stream flows on a real broker: no alert lost."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from tests.daemon.test_faults import SEQ_LEN, daemon_config, step_of, stream, trained_model
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

    producer_done = threading.Event()

    def produce_paced() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        for n, (key, raw) in enumerate(events):
            producer.send(topic, key=key, value=raw)
            if n % 500 == 499:
                time.sleep(0.4)  # about 1,200 events/s: the kills land while it flows
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
        for _ in range(5):
            daemon = start_daemon(base, log)
            delay = rng.uniform(6, 13)  # start-up takes ~6 s: most kills land mid-scoring
            time.sleep(delay)
            assert daemon.poll() is None, log.read_text()[-3000:]
            daemon.kill()
            daemon.wait(10)
            kills.append(round(delay, 1))
        producer_done.wait(120)
        daemon = start_daemon(base, log)
        wait_until_ready(config["metrics"]["port"], daemon, log, 120)
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
        f"kills after {kills} s, "
        f"{len(spikes) * len(SENSORS)} spike/sensor pairs all alerted, {len(reader.alerts)} "
        f"alerts ({duplicates} repeated with the same id), {len(wrong)} outside spikes, "
        f"{len(events) - scored} events unscored"
    )
    assert len(wrong) <= 2, wrong
