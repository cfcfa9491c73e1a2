"""The checkpoint (pure logic, with a plain in-memory source): what is committed, when,
and what happens when committing fails."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from streamdet.core.backoff import Backoff
from streamdet.core.records import Event, Message, Position
from streamdet.io.sinks.dead_letter import DeadLetter
from streamdet.runtime.checkpoint import Checkpoint
from streamdet.runtime.outbox import Outbox
from streamdet.stream.window_store import WindowStore
from tests.fakes import HeldWork, MemorySource, RecordingSink


def checkpoint_of(source, *stages, outbox=None, **options) -> Checkpoint:
    outbox = Outbox([], []) if outbox is None else outbox
    return Checkpoint(source, outbox, list(stages), interval_s=0, **options)


def consume(checkpoint: Checkpoint, offsets, partition: int = 0) -> None:
    for offset in offsets:
        checkpoint.consumed(Message("t", partition, offset, None, b"", 0))


def test_scored_through_stops_before_the_first_unsettled_window():
    source = MemorySource()
    checkpoint = checkpoint_of(source, HeldWork({("t", 0): (70, 90)}, {("t", 0): 60}))
    consume(checkpoint, range(100))
    assert checkpoint.commit(now=1.0)
    assert source.committed[("t", 0)] == Position(replay_from=60, scored_through=89, consumed=100)
    # Nothing new: no second commit of the same position.
    assert checkpoint.positions() == {}


def test_in_process_progress_never_suppresses_a_window():
    source = MemorySource(marks={("t", 0): 49})
    checkpoint = checkpoint_of(source)
    consume(checkpoint, range(100))
    checkpoint.commit(now=1.0)
    assert source.committed[("t", 0)].scored_through == 99
    # Only the restart mark read when the partition was first seen decides replays.
    assert checkpoint.already_scored("t", 0, 49)
    assert not checkpoint.already_scored("t", 0, 50)
    assert not checkpoint.already_scored("t", 0, 99)


def test_scored_through_never_goes_below_the_restart_mark():
    source = MemorySource(marks={("t", 0): 80})
    checkpoint = checkpoint_of(source, HeldWork({("t", 0): (60, 70)}))
    consume(checkpoint, range(50, 100))
    checkpoint.commit(now=1.0)  # rebuilt windows, already scored
    assert source.committed[("t", 0)] == Position(60, 80, 100)


def test_failed_commits_back_off_and_never_raise():
    source = MemorySource()
    failures = []
    checkpoint = checkpoint_of(source, backoff=Backoff(1, 30), on_failure=failures.append)
    consume(checkpoint, range(10))
    source.fail = 2
    assert not checkpoint.commit(now=10.0)
    assert not checkpoint.due(10.5) and checkpoint.due(11.0)
    assert not checkpoint.commit(now=11.0)
    assert not checkpoint.due(12.9) and checkpoint.due(13.0)  # 1 s, then 2 s
    assert checkpoint.commit(now=13.0)
    assert source.committed[("t", 0)] == Position(10, 9, 10)
    assert len(failures) == 2 and checkpoint.due(13.0)
    assert checkpoint.failures == {"RuntimeError": 2}


def test_revoked_and_unowned_partitions_are_never_committed():
    source = MemorySource(owned={("t", 0), ("t", 1)})
    checkpoint = checkpoint_of(source)
    consume(checkpoint, range(5), partition=0)
    consume(checkpoint, range(5), partition=1)
    source.owned = {("t", 0)}  # partition 1 moved, the callback has not run yet
    checkpoint.commit(now=1.0)
    assert set(source.committed) == {("t", 0)}
    checkpoint.revoke({("t", 1)})
    assert checkpoint.partitions() == {("t", 0)}


def test_partitions_handed_over_are_settled_exactly_even_once_the_group_lists_them_gone():
    source = MemorySource(owned={("t", 0)})  # cooperative: partition 1 already reassigned
    windows = HeldWork({("t", 1): (40, 45)}, {("t", 1): 30})
    checkpoint = checkpoint_of(source, windows)
    consume(checkpoint, range(50), partition=1)
    # The windows still waiting keep scored_through before them: the next owner scores them.
    assert checkpoint.settle({("t", 1)}) == {("t", 1): Position(30, 44, 50)}
    assert checkpoint.positions() == {}  # a periodic commit never writes a partition not owned


def test_a_silent_series_stops_pinning_the_replay_point():
    source = MemorySource()
    windows = HeldWork({("t", 0): (900, 950)}, {("t", 0): 3})
    checkpoint = checkpoint_of(source, windows, max_replay_lag=200)
    consume(checkpoint, range(1000))
    checkpoint.commit(now=1.0)
    assert source.committed[("t", 0)].replay_from == 800
    windows.held = {("t", 0): (500, 950)}
    checkpoint.commit(now=2.0)
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
    held = {("t", p): (o, o) for p, o in store.unreleased().items()}
    replay = {("t", p): o for p, o in store.replay_points().items()}
    checkpoint = checkpoint_of(source, HeldWork(held, replay))
    consume(checkpoint, range(6))
    checkpoint.commit(now=1.0)
    assert source.committed[("t", 0)].scored_through == 3


def test_an_undelivered_dead_letter_holds_back_its_partition_only():
    """A dead letter no sink accepts keeps its own partition's commit before it; every other
    partition and topic keeps committing (one message used to block every commit)."""
    sink = RecordingSink("dlq")
    sink.fail = 3
    outbox = Outbox([], [sink], backoff=Backoff(0, 0))
    source = MemorySource()
    checkpoint = checkpoint_of(source, outbox=outbox)
    consume(checkpoint, range(10), partition=0)
    consume(checkpoint, range(10), partition=1)
    outbox.add_dead_letter(DeadLetter(Message("t", 1, 4, None, b"x", 0), "too_large", ""))
    checkpoint.commit(now=1.0)
    assert source.committed[("t", 0)] == Position(10, 9, 10)
    assert source.committed[("t", 1)] == Position(4, 3, 10)
    for now in (2.0, 3.0, 4.0):
        checkpoint.commit(now=now)
    assert source.committed[("t", 1)] == Position(10, 9, 10) and len(sink.items) == 1


class Transaction:
    """Records what the checkpoint asks of a transaction; ``fail`` commits raise."""

    def __init__(self) -> None:
        self.open = False
        self.committed: list[dict] = []
        self.aborted = 0
        self.fail = 0
        self.rewound: list[set] = []

    def begin(self) -> None:
        self.open = True

    def commit(self, positions) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("CoordinatorNotAvailableError")
        self.committed.append(dict(positions))
        self.open = False

    def abort(self) -> None:
        self.aborted += 1
        self.open = False

    def rewind(self, partitions) -> None:
        self.rewound.append(set(partitions))

    in_doubt = False  # the real one's commits in doubt: tests/io/test_transactions.py

    def resolve(self) -> None:
        return None


def test_exactly_once_alerts_count_as_delivered_only_when_their_transaction_commits():
    topic_sink, file_sink = RecordingSink("alerts-kafka", transactional=True), RecordingSink()
    delivered = []
    outbox = Outbox([topic_sink, file_sink], [], on_delivered=delivered.append)
    transaction, rewound = Transaction(), []
    source = MemorySource()
    checkpoint = checkpoint_of(
        source, outbox=outbox, transaction=transaction, on_rewind=rewound.append
    )
    consume(checkpoint, range(10))
    window = SimpleNamespace(key=("t", 0), start_offset=4, end_offset=9)
    outbox.add_alert({"alert_id": "a"}, window)
    transaction.fail = 1
    assert not checkpoint.commit(now=1.0)
    # Aborted with the alert in it: not sent again from here; the partition is read again
    # from its last commit, which raises the alert again.
    assert transaction.aborted == 1 and delivered == [] and len(outbox) == 0
    assert transaction.rewound == rewound == [{("t", 0)}] and checkpoint.rewinds == 1
    assert checkpoint.positions() == {}
    consume(checkpoint, range(10))
    outbox.add_alert({"alert_id": "a"}, window)
    assert checkpoint.commit(now=10.0)
    assert [len(topic_sink.items), len(file_sink.items)] == [2, 2]  # the file: at least once
    assert transaction.committed == [{("t", 0): Position(10, 9, 10)}]
    assert [item.record["alert_id"] for item in delivered] == ["a"]
    assert source.committed == {}  # offsets go through the transaction only


def test_a_failed_commit_with_nothing_in_its_transaction_reads_nothing_again():
    sink = RecordingSink("alerts-kafka", transactional=True)
    outbox, transaction = Outbox([sink], []), Transaction()
    checkpoint = checkpoint_of(MemorySource(), outbox=outbox, transaction=transaction)
    consume(checkpoint, range(10))
    transaction.fail = 1
    assert not checkpoint.commit(now=1.0)
    assert transaction.aborted == 1 and transaction.rewound == []
    assert checkpoint.commit(now=10.0)
    assert transaction.committed == [{("t", 0): Position(10, 9, 10)}]


def exactly_once_with_two_partitions():
    sink = RecordingSink("alerts-kafka", transactional=True)
    outbox, transaction = Outbox([sink], []), Transaction()
    source = MemorySource(owned={("t", 0), ("t", 1)})
    checkpoint = checkpoint_of(source, outbox=outbox, transaction=transaction)
    for partition in (0, 1):
        consume(checkpoint, range(10), partition=partition)
        window = SimpleNamespace(key=("t", partition), start_offset=4, end_offset=9)
        outbox.add_alert({"alert_id": f"a{partition}"}, window)
    return sink, outbox, transaction, source, checkpoint


def test_a_partition_handed_over_leaves_its_undelivered_alerts_to_its_next_owner():
    """Under exactly-once, an alert the sink has not taken kept its partition's commit
    before it, so the next owner raises it again: sent from here too, a read_committed
    subscriber would read it twice. The other partition's alert stays."""
    sink, outbox, transaction, source, checkpoint = exactly_once_with_two_partitions()
    sink.fail = 1
    outbox.flush(now=0.0)
    source.owned = {("t", 0)}
    checkpoint.revoke({("t", 1)})
    assert outbox.pending() == {("t", 0): (4, 9)} and transaction.rewound == []
    assert checkpoint.commit(now=60.0)
    assert [item["alert_id"] for item in sink.items] == ["a0"]


def test_a_partition_lost_inside_a_transaction_aborts_it_and_reads_every_partition_again():
    """Membership lost (the group moved on during a broker outage): the open transaction
    holds alerts of a partition that is no longer ours. Committed with the other
    partitions' offsets they would be read twice (its next owner raises them too), so it
    is aborted and everything read again from the last commit."""
    _sink, outbox, transaction, source, checkpoint = exactly_once_with_two_partitions()
    outbox.flush(now=0.0)  # both alerts inside the open transaction
    assert outbox.staged
    source.owned = {("t", 0)}
    checkpoint.revoke({("t", 1)})
    assert transaction.aborted == 1 and len(outbox) == 0 and not outbox.staged
    assert transaction.rewound == [{("t", 0), ("t", 1)}]
    assert checkpoint.partitions() == set()


def test_a_transaction_carries_only_alerts_at_or_below_the_mark_it_commits():
    """A window of one series scored and alerted while an earlier window of another waits
    (a backlog released in slices): committed now, the alert would sit past the commit's
    scored_through, and a re-read from that commit would raise it a second time."""
    sink = RecordingSink("alerts-kafka", transactional=True)
    outbox, transaction = Outbox([sink], []), Transaction()
    waiting = HeldWork({("t", 0): (4, 9)})
    checkpoint = checkpoint_of(MemorySource(), waiting, outbox=outbox, transaction=transaction)
    consume(checkpoint, range(20))
    later = SimpleNamespace(key=("t", 0), start_offset=10, end_offset=15)
    outbox.add_alert({"alert_id": "later"}, later)
    assert checkpoint.commit(now=1.0)
    assert transaction.committed[-1][("t", 0)].scored_through == 8
    assert sink.items == [] and len(outbox) == 1  # waits for the earlier window
    waiting.held = {}
    assert checkpoint.commit(now=2.0)
    assert [item["alert_id"] for item in sink.items] == ["later"]
    assert transaction.committed[-1][("t", 0)].scored_through == 19
