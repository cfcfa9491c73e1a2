from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.config import MessageFormat
from streamdet.core.records import Event, Message
from streamdet.stream.decode import InvalidMessage, decode_timeseries, nesting_depth
from streamdet.stream.window_store import WindowStore


def message(body: object, offset: int = 3, key: bytes | None = None) -> Message:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message("plant", 1, offset, key, raw, 1_700_000_000_500)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "undecodable_json"),
        (b"[1, 2]", "wrong_type"),
        ({"ts": 1, "value": 1}, "missing_field"),
        ({"sensor": "a", "ts": "yesterday", "value": 1}, "wrong_type"),
        ({"sensor": "a", "ts": 1, "value": True}, "wrong_type"),
        (b'{"sensor": "a", "ts": 1, "value": Infinity}', "non_finite"),
        ({"sensor": "a", "ts": 1, "value": [1, 2]}, "feature_count"),
    ],
)
def test_bad_messages_name_topic_offset_and_reason(body, reason):
    with pytest.raises(InvalidMessage) as info:
        decode_timeseries(message(body), MessageFormat())
    assert info.value.reason == reason
    assert str(info.value).startswith(f"topic plant partition 1 offset 3: {reason}")


def test_series_from_key_and_timestamp_from_kafka_and_several_values():
    fmt = MessageFormat(series_key=None, timestamp_field=None, value_fields=("a", "b"))
    event = decode_timeseries(message({"a": 1, "b": 2.5}, key=b"pump-7"), fmt)
    assert event.series == "pump-7"
    assert event.timestamp_ms == 1_700_000_000_500
    assert event.values.tolist() == [1.0, 2.5]


def event(series: str, ts: int, offset: int, partition: int = 0) -> Event:
    return Event(
        series,
        ts,
        np.array([float(ts)], np.float32),
        Message("t", partition, offset, None, b"", ts),
    )


def test_reorder_within_lateness_emits_windows_in_timestamp_order():
    store = WindowStore(seq_len=3, n_features=1, out_of_order="reorder", lateness_ms=20)
    windows = []
    for offset, ts in enumerate([0, 10, 30, 20, 40, 50, 60, 5]):
        windows += store.add_all(event("a", ts, offset))
    # 60 releases everything up to 40: the held 30 and 20 come out in timestamp order
    assert [w.values[:, 0].tolist() for w in windows] == [[0, 10, 20], [10, 20, 30], [20, 30, 40]]
    assert store.dropped_late == 1  # ts 5 arrived after ts 40 was released


def test_drop_mode_counts_late_events():
    store = WindowStore(seq_len=2, n_features=1)
    for offset, ts in enumerate([0, 10, 5, 20]):
        store.add_all(event("a", ts, offset))
    assert store.dropped_late == 1


def test_replay_point_is_the_oldest_event_any_series_still_needs():
    store = WindowStore(seq_len=4, n_features=1)
    for offset in range(10):
        store.add_all(event("a" if offset < 8 else "b", offset, offset, partition=offset % 2))
    # a's events alternate partitions (even offsets on 0); its next window needs its last
    # 3 events (5 on p1, 6 on p0, 7 on p1), so each partition must replay from those.
    assert store.replay_points() == {1: 5, 0: 6}


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


def json_values(depth: int = 6):
    text = st.text(alphabet='[]{}"\\ab\u00e9', max_size=6)
    leaves = st.none() | st.booleans() | st.integers() | text
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=12,
    )


def true_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values())
def test_the_depth_pre_check_reads_strings_as_the_parser_does(value):
    """Brackets, quotes and backslashes inside strings never count; the depth is exact."""
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert nesting_depth(raw) == true_depth(value)


def test_the_depth_pre_check_is_linear_in_the_message_size():
    """A megabyte of escaped quotes (hours for the old quadratic pre-check) is measured in
    about a tenth of a second; the bound is a hundred times that."""
    import time

    hostile = b'{"x": [[[[ "' + b'\\"' * 500_000
    started = time.perf_counter()
    assert nesting_depth(hostile) == 5
    assert time.perf_counter() - started < 10
