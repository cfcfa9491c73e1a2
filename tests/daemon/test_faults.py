"""The daemon against a real broker under hostile input and faults: poison messages mixed
into a live stream, out-of-order traffic arriving live, a training that fails in one of two
topics. Each daemon runs as a subprocess, as a user runs it."""

from __future__ import annotations

import fcntl
import json
import random
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from streamdet.config import LimitsConfig, MessageFormat, TopicConfig
from streamdet.io.sources.base import Message
from streamdet.serving.lifecycle import ModelLifecycle
from streamdet.stream.decode import InvalidMessage, decode_timeseries
from tests.daemon.test_poison import TIMESERIES_POISON
from tests.daemon_helpers import (
    AlertReader,
    dead_letters,
    start_daemon,
    stop_daemon,
    wait_until_ready,
)
from tests.helpers import free_port

pytestmark = pytest.mark.kafka

BASE_MS = 1_700_000_000_000
STEP_MS = 60_000
SEQ_LEN = 16
SENSORS = ("pump-0", "pump-1")
TOPIC_LIMITS = {"max_message_bytes": 100_000}


def value(sensor: int, step: int, spikes: set[int], rng: random.Random) -> float:
    base = np.sin(2 * np.pi * step / 24 + sensor) + 0.05 * rng.gauss(0, 1)
    return round(float(base + (4.0 if step in spikes else 0.0)), 5)


def stream(
    steps: range, spikes: set[int], seed: int = 0, sensors: tuple[str, ...] = SENSORS
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every sensor's event at each step, in step order; a spike at each of
    ``spikes`` on every sensor."""
    rng = random.Random(seed)
    out = []
    for step in steps:
        for i, sensor in enumerate(sensors):
            event = {"sensor": sensor, "ts": BASE_MS + step * STEP_MS, "value": 0.0}
            event["value"] = value(i, step, spikes, rng)
            out.append((sensor.encode(), json.dumps(event).encode()))
    return out


def step_of(alert: dict) -> int:
    end = time.strptime(alert["window_end"][:19], "%Y-%m-%dT%H:%M:%S")
    return int((time.mktime(end) - time.timezone) * 1000 - BASE_MS) // STEP_MS


def caught(alerts: list[dict], step: int) -> bool:
    return any(step <= step_of(a) < step + SEQ_LEN for a in alerts)


def topic_config(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "window": {"seq_len": SEQ_LEN},
        "limits": TOPIC_LIMITS,
        "detector": {
            "name": "seq2seq",
            "params": {"latent_dim": 8, "epochs": 6, "seed": 0},
            "warmup_events": 400,
        },
        "threshold": {"threshold_perc": 100, "margin_perc": 20},
        **extra,
    }


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A small Seq2Seq model of the normal stream, trained once per test run and shared by
    every module's daemons on every worker (each daemon loads a copy of it)."""
    run_dir = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        run_dir = run_dir.parent  # the run's folder, above each xdist worker's own
    store = run_dir / "trained-normal"
    with (run_dir / "trained-normal.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker trains, the other waits and loads
        if not (store / "trained").exists():
            shutil.rmtree(store, ignore_errors=True)  # a training cut short
            topic = TopicConfig.model_validate(topic_config("normal"))
            model = ModelLifecycle(topic, store, 1, progress=lambda m: None)
            series: dict[str, list[float]] = {s: [] for s in SENSORS}
            for key, raw in stream(range(600), spikes=set(), seed=99):
                series[key.decode()].append(json.loads(raw)["value"])
            model.train({k: np.asarray(v, np.float32)[:, None] for k, v in series.items()})
            (store / "trained").touch()
    return store / "normal"


def write_config(folder: Path, bootstrap: str, topics: list[dict], port: int, **kw: Any) -> Path:
    """A Kafka-mode config.yaml for ``topics``; ``kafka`` (a dict) adds to its section;
    ``commit_interval_ms`` replaces the tests' 200 ms; ``delivery`` adds to ``alerts``."""
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"g-{topics[0]['name']}",
            **kw.get("kafka", {}),
        },
        "topics": topics,
        "alerts": {
            "topic": kw["alerts"],
            "cooldown_s": kw.get("cooldown_s", 0),
            "file": None,
            **kw.get("delivery", {}),
        },
        **({"feedback": kw["feedback"]} if "feedback" in kw else {}),
        "dead_letter": {"topic": kw["dlq"]},
        "metrics": {"port": port},
        "models": {"store": str(folder / "models")},
        "batching": {"commit_interval_ms": kw.get("commit_interval_ms", 200)},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def daemon_config(
    folder: Path, bootstrap: str, topic: str, model: Path, port: int | None = None, **kw: Any
) -> Path:
    """One topic that loads a copy of ``model``; ``window`` and ``kafka`` may be given."""
    extra = {"window": kw.pop("window")} if "window" in kw else {}
    topics = [with_model(topic_config(topic, **extra), model, folder)]
    return write_config(folder, bootstrap, topics, port or free_port(), **kw)


def with_model(topic: dict, model: Path, folder: Path) -> dict:
    target = folder / f"model-{topic['name']}"
    shutil.copytree(model, target)
    return {**topic, "detector": {**topic["detector"], "model_dir": str(target)}}


def hostile_messages(count: int, seed: int) -> dict[bytes, str]:
    """Messages that must each be refused, with the reason the decoder gives now: the named
    poison kinds, then random bytes, broken and mistyped JSON, deep nesting, and numbers or
    timestamps out of range. None of them decodes by accident (checked here)."""
    rng = random.Random(seed)
    future_ms = int(time.time() * 1000) + 600_000
    out = [raw for raw, _ in TIMESERIES_POISON.values() if len(raw) < 900_000]
    out.append(b'{"sensor": "pump-0", "ts": 1, "pad": "' + b"x" * 200_000 + b'"}')

    def event(n: int, **fields: object) -> dict:
        return {"n": n, "sensor": "pump-0", "ts": BASE_MS, "value": 1.0, **fields}

    # Each maker takes a serial number, so every message differs from every other.
    makers = [
        lambda n: n.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 200)),
        lambda n: json.dumps(event(n)).encode()[: -rng.randint(1, 40)],
        lambda n: json.dumps(event(n, value=rng.choice(["x", None, [1], {}, True]))).encode(),
        lambda n: b'{"n": %d, "v": ' % n + b"[" * rng.randint(40, 3000) + b"}",
        lambda n: json.dumps(event(n, value=rng.choice([1e39, -1e300, 3.5e38]))).encode(),
        lambda n: json.dumps(event(n, ts=rng.choice([-1, 10**20, "soon", None]))).encode(),
        # Stamped hours ahead (a producer's broken clock): accepted, one would make the
        # series' real events late (dropped) until the wall clock caught up with it.
        lambda n: json.dumps(event(n, ts=future_ms + rng.randint(0, 23 * 3_600_000))).encode(),
        lambda n: json.dumps(event(n, sensor="\ud800" * rng.randint(1, 3))).encode(
            "utf-8", "surrogatepass"
        ),
        lambda n: json.dumps(event(n, sensor="s" * rng.randint(257, 5000))).encode(),
    ]
    while len(out) < count:
        out.append(rng.choice(makers)(len(out)))
    assert len(set(out)) == count
    limits = LimitsConfig(**TOPIC_LIMITS)
    now_ms = int(time.time() * 1000)
    reasons = {}
    for i, raw in enumerate(out):
        with pytest.raises(InvalidMessage) as info:
            message = Message("t", 0, i, b"pump-0", raw, 0)
            decode_timeseries(message, MessageFormat(), False, limits, now_ms)
        reasons[raw] = info.value.reason
    return reasons


def metric(text: str, name: str) -> float:
    """The value of one sample in Prometheus text format (-1 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return -1.0


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for key, raw in messages:
        producer.send(topic, key=key, value=raw)
    producer.flush()
    producer.close()


def run_until(
    config: Path, bootstrap: str, alerts_topic: str, done, timeout: float = 240
) -> list[dict]:
    reader = AlertReader(bootstrap, alerts_topic)
    log = config.parent / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(done, timeout, daemon, log)
        time.sleep(1.0)
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    return reader.alerts


def test_poison_messages_never_stop_the_daemon_and_change_no_alert(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    spikes = {700, 900, 1100}
    valid = stream(range(1200), spikes)
    hostile = hostile_messages(10_000, seed=1)
    rng = random.Random(2)
    mixed: list[tuple[bytes | None, bytes]] = list(valid)
    for raw in hostile:
        mixed.insert(rng.randrange(len(mixed) + 1), (rng.choice([None, b"pump-0"]), raw))

    runs = {}
    for name, messages in (("poisoned", mixed), ("clean", valid)):
        topic, alerts, dlq = new_topic(name), new_topic("alerts"), new_topic("dlq")
        produce(kafka_bootstrap, topic, messages)
        folder = tmp_path / name
        config = daemon_config(
            folder, kafka_bootstrap, topic, trained_model, alerts=alerts, dlq=dlq
        )
        runs[name] = run_until(
            config,
            kafka_bootstrap,
            alerts,
            lambda got: all(caught(got, s) for s in spikes),
        )
        if name == "poisoned":
            letters = dead_letters(kafka_bootstrap, dlq)
    assert letters == hostile  # every hostile message, each with its reason
    assert len(set(hostile.values())) >= 8
    reasons = {r: list(hostile.values()).count(r) for r in sorted(set(hostile.values()))}
    print(
        f"RELIABILITY poison: {len(valid)} valid + {len(hostile)} hostile messages; "
        f"{len(letters)} dead letters by reason {reasons}; alerts {len(runs['poisoned'])} "
        f"(clean run {len(runs['clean'])})"
    )

    def identity(alerts: list[dict]) -> set[tuple[str, str]]:
        return {(a["series"], a["window_end"]) for a in alerts}

    assert identity(runs["poisoned"]) == identity(runs["clean"])


def test_live_out_of_order_traffic_alerts_with_reorder(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    """Events arrive live (the daemon is caught up), every fifth one two steps late: with
    ``out_of_order: reorder`` each planted spike still alerts."""
    topic, alerts, dlq = new_topic("live"), new_topic("alerts"), new_topic("dlq")
    spikes = {300, 420, 540}
    port = free_port()
    folder = tmp_path / "live"
    config = daemon_config(
        folder,
        kafka_bootstrap,
        topic,
        trained_model,
        port,
        alerts=alerts,
        dlq=dlq,
        window={"seq_len": SEQ_LEN, "out_of_order": "reorder", "lateness_ms": 5 * STEP_MS},
    )
    events = stream(range(650), spikes, seed=3)
    late = [events[i] for i in range(len(events)) if i % 10 == 5]
    ordered = [e for i, e in enumerate(events) if i % 10 != 5]
    for n, event in enumerate(late):  # each late event arrives 2 steps after its time
        ordered.insert(min(10 * n + 9, len(ordered)), event)

    reader = AlertReader(kafka_bootstrap, alerts)
    log = folder / "daemon.log"
    daemon = start_daemon(config, log)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=0)
    try:
        wait_until_ready(port, daemon, log, 60)
        for key, raw in ordered:  # live: ~400 events/s, far below what the daemon scores
            producer.send(topic, key=key, value=raw)
            time.sleep(0.0025)
        producer.flush()
        reader.wait_for(lambda got: all(caught(got, s) for s in spikes), 120, daemon, log)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert metric(metrics, f'streamdet_late_events_dropped_total{{topic="{topic}"}}') == 0
        print(
            f"RELIABILITY live reorder: {len(ordered)} events at ~400/s, {len(late)} two "
            f"steps late, {len(spikes)} spikes x {len(SENSORS)} sensors, all alerted; "
            f"{len(reader.alerts)} alerts"
        )
        stop_daemon(daemon)
    finally:
        producer.close()
        if daemon.poll() is None:
            daemon.kill()
        reader.close()


def test_a_training_failure_in_one_topic_never_blocks_the_other(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    healthy, broken = new_topic("healthy"), new_topic("broken")
    alerts, dlq = new_topic("alerts"), new_topic("dlq")
    spikes = {650}
    produce(kafka_bootstrap, healthy, stream(range(800), spikes))
    produce(kafka_bootstrap, broken, stream(range(800), set()))
    port = free_port()
    folder = tmp_path / "two"
    bad = topic_config(broken)
    bad["detector"] = {**bad["detector"], "params": {"latent_dims": 8}, "retry_after_s": 1}
    config = write_config(
        folder,
        kafka_bootstrap,
        [with_model(topic_config(healthy), trained_model, folder), bad],
        port,
        alerts=alerts,
        dlq=dlq,
    )
    reader = AlertReader(kafka_bootstrap, alerts)
    log = folder / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(lambda got: caught(got, 650), 180, daemon, log)
        deadline = time.time() + 60
        metrics = ready = ""
        while time.time() < deadline:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except urllib.error.HTTPError as exc:
                ready = exc.read().decode()
            failures = f'streamdet_model_training_failures_total{{topic="{broken}"}}'
            if metric(metrics, failures) >= 2 and f"{broken}: training failed" in ready:
                break
            time.sleep(1)
        # The probe says which topic failed; the reason (exception text) only in the log.
        assert f"{broken}: training failed" in ready and "latent_dims" not in ready
        assert "latent_dims" in log.read_text()
        assert metric(metrics, failures) >= 2  # retried with backoff, still failing
        assert f'streamdet_model_ready{{topic="{healthy}"}} 1.0' in metrics
        time.sleep(1)
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{healthy}")
        committed = consumer.committed(TopicPartition(healthy, 0), metadata=True)
        consumer.close()
        assert committed is not None
        assert json.loads(committed.metadata)["scored_through"] == 2 * 800 - 1
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    assert all(a["topic"] == healthy for a in reader.alerts)
    print(
        f"RELIABILITY training failure: {metric(metrics, failures):.0f} failed attempts of "
        f"{broken} reported in /readyz; {healthy} alerted its spike and committed all 1600"
    )


def test_a_dead_letter_its_topic_refuses_as_too_large_is_cut_until_it_fits(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    """The dead-letter topic takes at most 500,000 bytes a message; a 700 kB undecodable
    message arrives. Its dead letter (under the 900 kB cut-off) is refused, cut to half and
    accepted, and the partition's commit passes it (one such message used to hold every
    commit of every topic, and made kafka-python fail every later send of the producer the
    alerts shared)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    dlq = f"dlq-small-{time.time_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(dlq, 1, 1, topic_configs={"max.message.bytes": "500000"})])
    admin.close()
    topic, alerts = new_topic("bigpoison"), new_topic("alerts")
    valid = stream(range(200), set())
    messages = [*valid[:100], (b"pump-0", b"{" + b"x" * 700_000), *valid[100:]]
    produce(kafka_bootstrap, topic, messages)
    config = daemon_config(tmp_path, kafka_bootstrap, topic, trained_model, alerts=alerts, dlq=dlq)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}")
    try:
        deadline, scored = time.time() + 180, -1
        while time.time() < deadline and scored < len(messages) - 1:
            assert daemon.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
            committed = consumer.committed(TopicPartition(topic, 0), metadata=True)
            if committed is not None and committed.metadata:
                scored = json.loads(committed.metadata)["scored_through"]
        assert scored == len(messages) - 1, log.read_text()[-3000:]
        stop_daemon(daemon)
    finally:
        consumer.close()
        if daemon.poll() is None:
            daemon.kill()
    reader = KafkaConsumer(
        dlq,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    letters = list(reader)
    reader.close()
    (letter,) = letters
    headers = dict(letter.headers)
    assert headers["streamdet_reason"] == b"too_large"  # the topic limit in topic_config
    assert headers["streamdet_original_size"] == b"700001" and len(letter.value) == 350_000


def committed_of(bootstrap: str, topic: str) -> tuple[int, dict]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}")
    try:
        committed = consumer.committed(TopicPartition(topic, 0), metadata=True)
        end = consumer.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
    finally:
        consumer.close()
    if committed is None:
        return end, {}
    return end - committed.offset, json.loads(committed.metadata)


def test_group_lag_is_zero_at_rest_and_a_restart_still_rebuilds_every_window(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    """1,000 series: the committed offset is the consumed position, so the group lag Kafka's
    tools and KEDA read is 0 at rest (it was (seq_len - 1) x 1,000 = 15,000 behind, and the
    shipped KEDA object scaled to its maximum for good). The replay point travels in the
    commit's metadata: a restarted daemon seeks back to it and rebuilds every window, so
    the windows completed after the restart are all scored, and none is scored twice."""
    sensors = tuple(f"s{i:04d}" for i in range(1000))
    topic, alerts, dlq = new_topic("lag"), new_topic("alerts"), new_topic("dlq")
    first = stream(range(SEQ_LEN), set(), sensors=sensors)
    produce(kafka_bootstrap, topic, first)
    port = free_port()
    config = daemon_config(
        tmp_path, kafka_bootstrap, topic, trained_model, port, alerts=alerts, dlq=dlq
    )
    log = tmp_path / "daemon.log"

    def run_until_scored(through: int) -> str:
        daemon = start_daemon(config, log)
        try:
            deadline, meta = time.time() + 180, {}
            while meta.get("scored_through", -1) < through and time.time() < deadline:
                assert daemon.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
                _, meta = committed_of(kafka_bootstrap, topic)
            assert meta.get("scored_through") == through, log.read_text()[-3000:]
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            stop_daemon(daemon)
        finally:
            if daemon.poll() is None:
                daemon.kill()
        return metrics

    run_until_scored(len(first) - 1)
    lag, meta = committed_of(kafka_bootstrap, topic)
    assert lag == 0
    assert meta["replay_from"] == len(sensors)  # the next windows need steps 1 to 15
    second = stream(range(SEQ_LEN, SEQ_LEN + 4), set(), sensors=sensors)
    produce(kafka_bootstrap, topic, second)
    metrics = run_until_scored(len(first) + len(second) - 1)
    # Sought back to step 1: each series' 15 replayed events refill its window, so each of
    # the 4 new steps completes one (without the seek, no series would have a window).
    scored = f'streamdet_windows_scored_total{{detector="seq2seq",topic="{topic}"}}'
    assert metric(metrics, scored) == 4000
    assert metric(metrics, f'streamdet_windows_rebuilt_total{{topic="{topic}"}}') == 0
    assert committed_of(kafka_bootstrap, topic)[0] == 0


def excursions(steps: range, spikes: dict[int, float], rng: random.Random) -> list:
    """The normal stream of both sensors, with pump-0 lifted by ``spikes[step]`` at a step."""
    out = []
    for step in steps:
        for i, sensor in enumerate(SENSORS):
            lift = spikes.get(step, 0.0) if i == 0 else 0.0
            event = {"sensor": sensor, "ts": BASE_MS + step * STEP_MS}
            event["value"] = round(value(i, step, set(), rng) + lift, 5)
            out.append((sensor.encode(), json.dumps(event).encode()))
    return out


def on_pump0(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["series"] == "pump-0"]


def test_a_false_alarm_verdict_silences_the_same_excursion_but_not_a_larger_one(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    """An operator answers an alert with false_alarm on the feedback topic: the series' next
    identical excursion does not page, a larger one still does; the verdict is kept."""
    topic, alerts, dlq, feedback = (new_topic(n) for n in ("fb", "alerts", "dlq", "feedback"))
    port = free_port()
    config = daemon_config(
        tmp_path, kafka_bootstrap, topic, trained_model, port=port, alerts=alerts, dlq=dlq,
        cooldown_s=30 * STEP_MS / 1000, feedback={"topic": feedback},
    )  # fmt: skip
    rng = random.Random(5)
    # The same lift at the same phase of the daily cycle (period 24 steps), then 3x as high.
    first, same, larger, lift = 200, 200 + 24 * 10, 200 + 24 * 15, 1.5
    produce(kafka_bootstrap, topic, excursions(range(300), {first: lift}, rng))
    reader = AlertReader(kafka_bootstrap, alerts)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(lambda got: caught(on_pump0(got), first), 240, daemon, log)
        alarm = next(a for a in on_pump0(reader.alerts) if caught([a], first))
        verdict = {"alert_id": alarm["alert_id"], "verdict": "false_alarm", "note": "valve test"}
        produce(kafka_bootstrap, feedback, [(b"verdict", json.dumps(verdict).encode())])
        url = f"http://127.0.0.1:{port}/metrics"
        raised = f'streamdet_feedback_raised_series{{topic="{topic}"}}'
        deadline = time.time() + 60
        while metric(urllib.request.urlopen(url).read().decode(), raised) != 1.0:
            assert time.time() < deadline and daemon.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        produce(
            kafka_bootstrap, topic,
            excursions(range(300, 600), {same: lift, larger: 3 * lift}, rng),
        )  # fmt: skip
        reader.wait_for(lambda got: caught(on_pump0(got), larger), 240, daemon, log)
        text = urllib.request.urlopen(url).read().decode()
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    assert not caught(on_pump0(reader.alerts), same), on_pump0(reader.alerts)
    # The rule did flag the same lift again (no cooldown could hold it 240 steps later):
    # the bar, not the rule, kept it from paging.
    held = metric(text, f'streamdet_alerts_held_by_feedback_total{{topic="{topic}"}}')
    assert held >= 1
    assert metric(text, f'streamdet_feedback_total{{topic="{topic}",verdict="false_alarm"}}') == 1
    assert metric(text, f'streamdet_feedback_precision{{topic="{topic}"}}') == 0.0
    kept = json.loads((tmp_path / "models" / "feedback.json").read_text())["verdicts"]
    assert kept[alarm["alert_id"]]["verdict"] == "false_alarm"
    assert kept[alarm["alert_id"]]["series"] == "pump-0"
    assert kept[alarm["alert_id"]]["severity"] >= alarm["severity"]
    print(
        f"RELIABILITY feedback: alert severity {alarm['severity']:.3g} (excursion peak "
        f"{kept[alarm['alert_id']]['severity']:.3g}) judged false_alarm; the same lift at step "
        f"{same}: no alert ({held:.0f} flagged window(s) held by the bar); 3x the lift at step "
        f"{larger}: alerted"
    )
