"""The window store's per-series state: what it holds is exactly the last ``seq_len`` events,
what it costs is measured, and a producer inventing series names cannot push out the series
that have filled a window."""

from __future__ import annotations

import gc
import itertools
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.core.records import Event, Message
from streamdet.stream.window_store import WindowStore


def event(series: str, offset: int, value: float, partition: int = 0) -> Event:
    """Stamped by its value (the tests feed values in time order)."""
    message = Message("t", partition, offset, None, b"", 0)
    return Event(series, int(1000 * value), np.array([value], np.float32), message)


@settings(max_examples=80, deadline=None)
@given(
    seq_len=st.integers(1, 12),
    stride=st.integers(1, 4),
    partitions=st.lists(st.integers(0, 2), min_size=1, max_size=60),
)
def test_windows_and_replay_points_are_the_last_events_in_order(seq_len, stride, partitions):
    store = WindowStore(seq_len, 1, stride=stride, replay_refresh_s=0)
    lagging = WindowStore(seq_len, 1, stride=stride)  # its replay points refreshed seldom
    offsets = {p: 0 for p in range(3)}
    fed: list[tuple[int, int, float]] = []  # (partition, offset, value)
    for k, partition in enumerate(partitions):
        offsets[partition] += 1
        fed.append((partition, offsets[partition], float(k)))
        windows = store.add_all(event("a", offsets[partition], float(k), partition))
        lagging.add_all(event("a", offsets[partition], float(k), partition))
        count = len(fed)
        # Evenly spaced events: one window every ``stride``, at the first event of each
        # ``stride``-event cell of event time; all of them while the span a window judges
        # its cell from is too short to count a cell's events.
        span = seq_len - stride + 1 if seq_len > stride else seq_len
        short = min(k % stride + 1, span) == span
        due = count >= seq_len and (seq_len == 1 or k % stride == 0 or short)
        assert len(windows) == int(due)
        if due:
            (window,) = windows
            last = fed[-seq_len:]
            assert window.values[:, 0].tolist() == [v for _, _, v in last]
            assert (window.start_offset, window.end_offset) == (last[0][1], last[-1][1])
            assert window.partition == partition
        # The next window needs the last seq_len - 1 events: per partition, the oldest of them.
        keep = fed[-(seq_len - 1) :] if seq_len > 1 else []
        expected: dict[int, int] = {}
        for p, offset, _ in keep:
            expected[p] = min(expected.get(p, offset), offset)
        if not keep:
            expected = {partition: offsets[partition] + 1}
        assert store.replay_points() == expected
        # Points computed earlier are never past the true ones and miss no partition (a
        # restart re-reads more, never less).
        stale = lagging.replay_points()
        assert stale.keys() >= expected.keys()
        assert all(stale[p] <= expected[p] for p in expected)


def test_a_series_costs_what_the_store_says_and_a_quarter_of_what_it_did():
    store = WindowStore(seq_len=50, n_features=1)
    names = [f"sensor-{s:05d}" for s in range(2048)]  # the rows' arrays exactly full
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for name in names:
        for offset in range(50):
            store.add_all(event(name, offset, float(offset)))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    measured = sum(d.size_diff for d in after.compare_to(before, "filename")) / len(names)
    assert abs(measured - store.series_bytes) < 0.1 * store.series_bytes
    # Session 12's store: one small array pair and an object per series, 1,700 bytes; before
    # it, three int64 per event twice over and the values twice over took 3,380.
    assert store.series_bytes < 850


def test_invented_series_names_never_push_out_series_that_filled_a_window():
    evicted: list[str] = []
    store = WindowStore(seq_len=4, n_features=1, max_series=100, on_evict=evicted.append)
    offset = 0
    for _ in range(4):
        for s in range(60):
            store.add_all(event(f"real-{s}", offset, float(offset)))
            offset += 1
    for k in range(10_000):  # one message each: never a window
        store.add_all(event(f"invented-{k}", offset, float(offset)))
        offset += 1
    assert all(store.established(f"real-{s}") for s in range(60))
    assert len(store) == 100 and store.evicted == 10_000 - 40
    assert all(name.startswith("invented-") for name in evicted)
    # A new series that keeps sending gets in although every slot is taken and invented
    # names keep coming (it is evicted with them at first, but its events are counted).
    for step in range(12):
        for s in range(1, 60):
            store.add_all(event(f"real-{s}", offset, float(offset)))
            offset += 1
        for k in range(50):
            store.add_all(event(f"newcomer-{k}-{step}", offset, float(offset)))
            offset += 1
        store.add_all(event("valve", offset, float(offset)))
        offset += 1
    assert store.established("valve")
    assert all(store.established(f"real-{s}") for s in range(60))
    # Trimmed, the inventions go first, then the series silent the longest: real-0, and as
    # many more of the oldest as the newcomers the sketch took for live (str hashes differ
    # per process, so at seq_len 4 a collision sometimes makes one look live; it is then as
    # recent as the others, and kept).
    taken_for_live = {name for name in store._series if name.startswith("newcomer-")}
    store.trim(60)
    kept = {name for name, _ in store._all()}
    oldest_gone = 1 + len(taken_for_live)
    assert kept == {f"real-{s}" for s in range(oldest_gone, 60)} | {"valve"} | taken_for_live


@settings(max_examples=120, deadline=None)
@given(
    seq_len=st.integers(2, 12),
    stride=st.integers(2, 5),
    gaps=st.lists(st.sampled_from([0, 1, 1, 1, 2, 7, 40]), min_size=30, max_size=150),
    series=st.lists(st.sampled_from("abc"), min_size=30, max_size=150),
    restart=st.floats(0, 1),
)
def test_a_restart_from_the_replay_point_scores_the_same_windows(
    seq_len, stride, gaps, series, restart
):
    """With ``stride > 1`` a restart rebuilds windows from the replay point; the windows it
    finds due are the ones an uninterrupted run found (so a re-raised alert keeps its
    ``alert_id``), whatever the spacing of the events, and no series goes more than
    ``stride`` events without a window when a window is longer than the stride."""
    stamps: dict[str, int] = {}
    events = []
    for offset, (name, gap) in enumerate(zip(series, gaps, strict=False)):
        stamps[name] = stamps.get(name, 0) + 1000 * gap  # repeated and uneven times too
        events.append(Event(name, stamps[name], np.array([1.0], np.float32),
                            Message("t", 0, offset, None, b"", 0)))  # fmt: skip
    cut = int(restart * len(events))

    def due_ends(store: WindowStore, fed: list[Event]) -> set[int]:
        return {w.end_offset for e in fed for w in store.add_all(e)}

    running = WindowStore(seq_len, 1, stride=stride, replay_refresh_s=0)
    before = due_ends(running, events[:cut])
    replay_from = running.replay_points(exact=True).get(0, cut)
    after = due_ends(running, events[cut:])
    restarted = WindowStore(seq_len, 1, stride=stride)
    rebuilt = due_ends(restarted, events[replay_from:])
    assert {end for end in rebuilt if end >= cut} == after
    assert rebuilt <= before | after
    if seq_len > stride:
        for name in set(series):
            own = [e.message.offset for e in events if e.series == name]
            marks = [i for i, offset in enumerate(own) if offset in before | after]
            assert all(b - a <= stride for a, b in itertools.pairwise(marks))


@settings(max_examples=60, deadline=None)
@given(
    seq_len=st.integers(1, 6),
    steps=st.lists(
        st.tuples(
            st.sampled_from("abcdefg"),  # series
            st.integers(0, 1),  # partition
            st.sampled_from([0, 1, 1000, 2**30, 2**31 + 7, 2**33]),  # time gap
            st.sampled_from([1, 3, 2**29, 2**31, 2**40]),  # offset gap
        ),
        min_size=1,
        max_size=120,
    ),
)
def test_shared_rows_keep_positions_exact_across_far_apart_events_and_reused_rows(seq_len, steps):
    """Rows of forgotten series are reused, and timestamps and offsets kept as 32-bit deltas
    move their base or widen to 64 bits: every window and replay point stays exact."""
    forgotten: list[str] = []
    store = WindowStore(seq_len, 1, max_series=3, on_evict=forgotten.append, replay_refresh_s=0)
    fed: dict[str, list[tuple[int, int, int]]] = {}  # series -> (timestamp, offset, partition)
    clock = {name: 10**12 for name in "abcdefg"}
    offsets = {0: 5, 1: 2**35}
    for series, partition, time_gap, offset_gap in steps:
        clock[series] += time_gap
        offsets[partition] += offset_gap
        message = Message("t", partition, offsets[partition], None, b"", 0)
        value = np.array([float(len(fed.get(series, ())))], np.float32)
        windows = store.add_all(Event(series, clock[series], value, message))
        for name in forgotten:
            fed.pop(name, None)
        forgotten.clear()
        history = fed.setdefault(series, [])
        history.append((clock[series], offsets[partition], partition))
        if len(history) >= seq_len:
            (window,) = windows
            last = history[-seq_len:]
            assert (window.start_ts_ms, window.end_ts_ms) == (last[0][0], last[-1][0])
            assert (window.start_offset, window.end_offset) == (last[0][1], last[-1][1])
            assert window.values[:, 0].tolist() == [
                float(k) for k in range(len(history) - seq_len, len(history))
            ]
        else:
            assert windows == []
        expected: dict[int, int] = {}
        for events in fed.values():
            keep = events[-(seq_len - 1) :] if seq_len > 1 else []
            for _, offset, p in keep:
                expected[p] = min(expected.get(p, offset), offset)
            if not keep:
                _, offset, p = events[-1]
                expected[p] = min(expected.get(p, offset + 1), offset + 1)
        assert store.replay_points() == expected
        assert len(store) == len(fed) <= 3


def test_a_row_moves_its_base_and_widens_only_when_one_window_spans_more_than_int32():
    store = WindowStore(seq_len=3, n_features=1, replay_refresh_s=0)
    narrow = store.series_bytes
    stamps = [10**12 + k * (2**30 - 1) for k in range(12)]  # 12 days apart: 5 months
    offsets = [2**40 + k * 2**29 for k in range(12)]
    for k, (stamp, offset) in enumerate(zip(stamps, offsets, strict=True)):
        message = Message("t", 0, offset, None, b"", 0)
        windows = store.add_all(Event("a", stamp, np.array([k], np.float32), message))
        if k >= 2:
            (window,) = windows
            assert (window.start_ts_ms, window.end_ts_ms) == (stamps[k - 2], stamp)
            assert (window.start_offset, window.end_offset) == (offsets[k - 2], offset)
        assert store.replay_points() == {0: offsets[max(k - 1, 0)]}
    assert store.series_bytes == narrow  # a window spans under 2**31 ms: the deltas fit
    message = Message("t", 0, offsets[-1] + 1, None, b"", 0)
    far = stamps[-1] + 2**32  # a window spanning more than int32 can hold
    (window,) = store.add_all(Event("a", far, np.array([12], np.float32), message))
    assert (window.start_ts_ms, window.end_ts_ms) == (stamps[-2], far)
    assert store.series_bytes == narrow + 3 * 8  # every row's positions widened to int64


def test_series_forgotten_for_bytes_or_a_revoke_no_longer_hold_back_the_replay_point():
    store = WindowStore(seq_len=4, n_features=1, replay_refresh_s=0)
    for offset in range(8):  # "old" first: the oldest offsets on partition 0
        store.add_all(event("old", offset, float(offset)))
    for offset in range(8, 16):
        store.add_all(event("new", offset, float(offset)))
        store.add_all(event("moved", offset, float(offset), partition=1))
    assert store.replay_points() == {0: 5, 1: 13}
    store.trim(2)  # "old" goes: the least recently updated (as for the byte budget)
    store.drop_partitions({1})  # another member now owns partition 1
    assert store.replay_points() == {0: 13}
    assert len(store) == 1
