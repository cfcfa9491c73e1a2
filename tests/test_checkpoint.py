"""The checkpoint (pure logic, with a plain in-memory source): what is committed, when,
and what happens when committing fails."""

from __future__ import annotations

import numpy as np

from streamdet.config import ThresholdConfig
from streamdet.pipeline.checkpoint import Checkpoint
from streamdet.pipeline.decode import Event
from streamdet.pipeline.policy import AlertPolicy
from streamdet.pipeline.window_store import WindowStore
from streamdet.sources.base import Message, Position


class MemorySource:
    """Commits kept in a dict; ``fail`` commits raise (like a rebalance in progress)."""

    def __init__(self, marks: dict | None = None, owned: set | None = None) -> None:
        self.committed: dict = {}
        self.marks = marks or {}
        self.owned = owned
        self.fail = 0

    def restart_mark(self, partition):
        return self.marks.get(partition, -1)

    def assignment(self):
        return self.owned

    def commit(self, positions):
        if self.fail:
            self.fail -= 1
            raise RuntimeError("RebalanceInProgressError")
        self.committed.update(positions)


class DeadLetters:
    def __init__(self) -> None:
        self.confirmed = 0

    def confirm(self) -> None:
        self.confirmed += 1


def consume(checkpoint: Checkpoint, offsets, partition: int = 0) -> None:
    for offset in offsets:
        checkpoint.consumed(Message("t", partition, offset, None, b"", 0))


def test_scored_through_stops_before_the_first_unsettled_window():
    source = MemorySource()
    checkpoint = Checkpoint(source, DeadLetters(), interval_s=0)
    consume(checkpoint, range(100))
    assert checkpoint.commit({("t", 0): 60}, {("t", 0): (70, 90)}, now=1.0)
    assert source.committed[("t", 0)] == Position(replay_from=60, scored_through=89)
    # Nothing new: no second commit of the same position.
    assert checkpoint.positions({("t", 0): 60}, {("t", 0): (70, 90)}) == {}


def test_in_process_progress_never_suppresses_a_window():
    source = MemorySource(marks={("t", 0): 49})
    checkpoint = Checkpoint(source, DeadLetters(), interval_s=0)
    consume(checkpoint, range(100))
    checkpoint.commit({}, {}, now=1.0)
    assert source.committed[("t", 0)].scored_through == 99
    # Only the restart mark read when the partition was first seen decides replays.
    assert checkpoint.already_scored("t", 0, 49)
    assert not checkpoint.already_scored("t", 0, 50)
    assert not checkpoint.already_scored("t", 0, 99)


def test_scored_through_never_goes_below_the_restart_mark():
    source = MemorySource(marks={("t", 0): 80})
    checkpoint = Checkpoint(source, DeadLetters(), interval_s=0)
    consume(checkpoint, range(50, 100))
    checkpoint.commit({}, {("t", 0): (60, 70)}, now=1.0)  # rebuilt windows, already scored
    assert source.committed[("t", 0)] == Position(60, 80)


def test_failed_commits_back_off_and_never_raise():
    source = MemorySource()
    failures = []
    checkpoint = Checkpoint(
        source, DeadLetters(), interval_s=0, retry_base_s=1, on_failure=failures.append
    )
    consume(checkpoint, range(10))
    source.fail = 2
    assert not checkpoint.commit({}, {}, now=10.0)
    assert not checkpoint.due(10.5) and checkpoint.due(11.0)
    assert not checkpoint.commit({}, {}, now=11.0)
    assert not checkpoint.due(12.9) and checkpoint.due(13.0)  # 1 s, then 2 s
    assert checkpoint.commit({}, {}, now=13.0)
    assert source.committed[("t", 0)] == Position(10, 9)
    assert len(failures) == 2 and checkpoint.due(13.0)


def test_revoked_and_unowned_partitions_are_never_committed():
    source = MemorySource(owned={("t", 0), ("t", 1)})
    checkpoint = Checkpoint(source, DeadLetters(), interval_s=0)
    consume(checkpoint, range(5), partition=0)
    consume(checkpoint, range(5), partition=1)
    source.owned = {("t", 0)}  # partition 1 moved, the callback has not run yet
    checkpoint.commit({}, {}, now=1.0)
    assert set(source.committed) == {("t", 0)}
    checkpoint.revoke({("t", 1)})
    assert checkpoint.partitions() == {("t", 0)}


def test_a_silent_series_stops_pinning_the_replay_point():
    source = MemorySource()
    checkpoint = Checkpoint(source, DeadLetters(), interval_s=0)
    consume(checkpoint, range(1000))
    checkpoint.commit({("t", 0): 3}, {("t", 0): (900, 950)}, now=1.0, max_replay_lag=200)
    assert source.committed[("t", 0)].replay_from == 800
    checkpoint.commit({("t", 0): 3}, {("t", 0): (500, 950)}, now=2.0, max_replay_lag=200)
    assert source.committed[("t", 0)].replay_from == 500  # unscored windows keep theirs


def test_held_events_keep_their_windows_unsettled():
    """With reordering, an event held for lateness has no window yet: the commit must not
    claim it scored (the bug that made live reorder traffic raise no alerts)."""
    store = WindowStore(seq_len=3, n_features=1, out_of_order="reorder", lateness_ms=5000)

    def event(offset: int, ts: int) -> Event:
        values = np.array([float(offset)], np.float32)
        return Event("a", ts, values, Message("t", 0, offset, None, b"", ts))

    emitted = []
    for offset, ts in enumerate([0, 1000, 2000, 1500, 6000, 7000]):
        emitted += store.add_all(event(offset, ts))
    assert [w.end_offset for w in emitted] == [3, 2]  # in time order; 4 and 5 still held
    assert store.unreleased() == {0: 4}
    source = MemorySource()
    checkpoint = Checkpoint(source, DeadLetters(), interval_s=0)
    consume(checkpoint, range(6))
    checkpoint.commit(store.replay_points(), {("t", 0): (4, 4)}, now=1.0)
    assert source.committed[("t", 0)].scored_through == 3


def test_cooldown_is_symmetric_so_a_future_timestamp_cannot_silence_a_series():
    policy = AlertPolicy(ThresholdConfig(), cooldown_ms=60_000, max_series=10)
    far_future = 10**13
    assert policy.decide("a", 1.0, True, far_future)
    assert policy.decide("a", 1.0, True, 1_800_000_000_000)  # hours "before": not silenced
    assert not policy.decide("a", 1.0, True, 1_800_000_030_000)


def test_alert_policy_state_is_bounded():
    policy = AlertPolicy(ThresholdConfig(policy="likelihood"), cooldown_ms=0, max_series=100)
    for i in range(10_000):
        policy.decide(f"s{i}", 0.1, False, i)
    assert len(policy) == 100


def test_window_store_caps_series_and_keeps_no_state_for_rows():
    store = WindowStore(seq_len=4, n_features=1, max_series=50)
    for i in range(500):
        ts = 1000 * i
        store.add_all(Event(f"s{i}", ts, np.ones(1, np.float32), Message("t", 0, i, None, b"", ts)))
    assert len(store) == 50 and store.evicted == 450
    rows = WindowStore(seq_len=1, n_features=2, out_of_order="accept")
    for i in range(100):
        message = Message("t", 0, i, None, b"", 0)
        (window,) = rows.add_all(Event(f"s{i}", 0, np.ones(2, np.float32), message))
        assert window.end_offset == i and window.values.shape == (1, 2)
    assert len(rows) == 0 and rows.replay_points() == {}


def test_a_full_backlog_pauses_its_topic_instead_of_dropping_windows(tmp_path):
    """A model that cannot train: windows wait, and past max_backlog_bytes the source is
    paused (the embedded simulator stands in for Kafka's pause)."""
    import threading
    import time

    from streamdet.app import Application
    from streamdet.config import load_config_text

    config = load_config_text(
        f"""
topics:
  - name: sensors
    window: {{seq_len: 4}}
    detector: {{name: seq2seq, params: {{latent_dims: 8}}, warmup_events: 10, retry_after_s: 600}}
simulator: {{rate: 4000, sensors: 2}}
batching: {{max_backlog_bytes: 2048}}
alerts: {{file: null, stdout: false}}
models: {{store: {tmp_path}}}
""",
        environ={},
    )
    app = Application(config, serve_metrics=False, progress=lambda m: None)
    runner = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not app.topics["sensors"].paused:
            time.sleep(0.2)
        runtime = app.topics["sensors"]
        assert runtime.model.state == "failed" and runtime.paused
        held = len(runtime.backlog)
        time.sleep(1.0)
        assert len(runtime.backlog) == held > 0  # nothing dropped, nothing more consumed
        assert runtime.backlog_bytes > 2048
    finally:
        app.stop()
        runner.join(30)
