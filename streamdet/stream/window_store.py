"""Per-series sliding windows over decoded events, with out-of-order handling.

>>> store = WindowStore(seq_len=4, n_features=1, stride=2)
>>> from streamdet.core.records import Message
>>> def ev(i, ts):
...     return Event("a", ts, np.array([float(i)], np.float32), Message("t", 0, i, None, b"", ts))
>>> ready = [store.add(ev(i, 1000 * i)) for i in range(9)]
>>> [r.end_offset for r in ready if r is not None]
[4, 6, 8]
>>> store.add(ev(9, 0)) is None, store.dropped_late
(True, 1)
"""

from __future__ import annotations

import heapq
import itertools
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from streamdet.core.bounded import FrequencySketch
from streamdet.core.records import Event, Window

# The object with its slots, its empty list of held events and its slot in an OrderedDict
# (measured with tracemalloc: tests/stream/test_window_memory.py checks the total).
_OVERHEAD_BYTES = 400


class _Series:
    """One series' last ``seq_len`` events: values, and the timestamp and offset of each (the
    partition of each only once the series has spanned partitions). One copy of each in a
    ring; reading a window copies it out in order (a window is copied anyway)."""

    __slots__ = ("count", "head", "last_partition", "last_ts", "partitions", "pending",
                 "positions", "values")  # fmt: skip

    def __init__(self, seq_len: int, n_features: int) -> None:
        self.values = np.zeros((seq_len, n_features), np.float32)
        # timestamp and offset of every buffered event, at full integer precision
        self.positions = np.zeros((seq_len, 2), np.int64)
        self.partitions: np.ndarray | None = None
        self.head = 0  # the slot the next event goes to: the oldest once the ring is full
        self.count = 0
        self.last_ts = -(2**62)
        self.pending: list[tuple[int, int, Event]] = []
        self.last_partition = -1

    @staticmethod
    def size(seq_len: int, n_features: int) -> int:
        """Bytes one series costs: its arrays with their headers, the object, its list of
        held events (empty) and its slot in the store's dict."""
        arrays = seq_len * n_features * 4 + seq_len * 16 + 2 * sys.getsizeof(np.zeros(0))
        return arrays + _OVERHEAD_BYTES

    def append(self, values: np.ndarray, timestamp_ms: int, offset: int, partition: int) -> None:
        slot = self.head
        self.values[slot] = values
        self.positions[slot] = (timestamp_ms, offset)
        if self.partitions is None and self.last_partition not in (-1, partition):
            self.partitions = np.full(len(self.positions), self.last_partition, np.int32)
        if self.partitions is not None:
            self.partitions[slot] = partition
        self.last_partition = partition
        self.last_ts = timestamp_ms
        self.head = (slot + 1) % len(self.positions)
        self.count += 1

    def _slot(self, back: int) -> int:
        """The slot of the event ``back`` events before the newest (0: the newest)."""
        return (self.head - 1 - back) % len(self.positions)

    def window(self) -> np.ndarray:
        """The last ``seq_len`` values, oldest first (a copy)."""
        return np.concatenate((self.values[self.head :], self.values[: self.head]))

    def replay_from(self, seq_len: int) -> dict[int, int]:
        """Per partition, the oldest offset the next window (or a held event) still needs."""
        needed: dict[int, int] = {}
        if self.count:
            keep = min(seq_len - 1, self.count)
            if keep == 0:
                needed[self.last_partition] = int(self.positions[self._slot(0), 1]) + 1
            elif self.partitions is None:
                needed[self.last_partition] = int(self.positions[self._slot(keep - 1), 1])
            else:
                for back in range(keep):
                    slot = self._slot(back)
                    partition, offset = int(self.partitions[slot]), int(self.positions[slot, 1])
                    needed[partition] = min(needed.get(partition, offset), offset)
        for _, _, held in self.pending:
            partition, offset = held.message.partition, held.message.offset
            needed[partition] = min(needed.get(partition, offset), offset)
        return needed


class WindowStore:
    """Ring buffers keyed by series; :meth:`add` returns a window when one is due.

    ``out_of_order='drop'`` drops an event older than its series' latest (counted in
    ``dropped_late``). ``'reorder'`` holds events for ``lateness_ms`` of event time and
    releases them in timestamp order; only events later than that bound are dropped.
    A window of one event (rows, images) keeps no per-series state at all.

    At most ``max_series`` series are tracked. Beyond that one is forgotten (counted in
    ``evicted``, reported to ``on_evict``): first the least recently updated of the series
    presumed invented, then the least recently updated of the others. A series is presumed
    invented until it fills a window, or has sent ``seq_len`` events counted across its
    evictions in a fixed-size frequency sketch (which forgets old counts): a producer
    inventing names (one message each) only ever evicts its own inventions, while a new
    series that keeps sending gets in and pushes out series that went silent. A forgotten
    series starts a new window if it comes back.
    """

    def __init__(
        self,
        seq_len: int,
        n_features: int,
        stride: int = 1,
        out_of_order: str = "drop",
        lateness_ms: int = 0,
        max_series: int = 100_000,
        on_evict: Callable[[str], None] = lambda series: None,
        replay_refresh_s: float = 10.0,
    ) -> None:
        self.seq_len = seq_len
        self.n_features = n_features
        # One event gives no spacing to place a stride on (rows and images use stride 1).
        self.stride = stride if seq_len > 1 else 1
        self.out_of_order = out_of_order
        self.lateness_ms = lateness_ms
        self.max_series = max_series
        self.on_evict = on_evict
        # Memory one tracked series costs here: its buffers and their bookkeeping (a series
        # that spans partitions adds 4 bytes an event).
        self.series_bytes = _Series.size(seq_len, n_features)
        self.dropped_late = 0
        self.evicted = 0
        self._young: OrderedDict[str, _Series] = OrderedDict()  # presumed invented
        self._series: OrderedDict[str, _Series] = OrderedDict()  # sent seq_len events
        self._frequency = FrequencySketch(max_series)
        self._tiebreak = itertools.count()
        self._held = 0  # events held for reordering, over every series
        # The replay points as last computed. A series' needed offsets only grow, so points
        # computed earlier are never past the true ones: a restart from them re-reads a
        # little more, never less. They are recomputed every ``replay_refresh_s`` (a pass
        # over every series cost 0.1 s at 100,000 series, at every commit), and at once when
        # a partition appears or leaves.
        self.replay_refresh_s = replay_refresh_s
        self._replay: dict[int, int] | None = None
        self._replay_at = 0.0

    def __len__(self) -> int:
        return len(self._young) + len(self._series)

    def established(self, series: str) -> bool:
        """Whether ``series`` has filled a window since it was last forgotten (always, for
        one-event windows: rows and images keep no per-series buffer)."""
        if self.seq_len == 1 and self.out_of_order == "accept":
            return True
        state = self._series.get(series)
        return state is not None and state.count >= self.seq_len

    def _all(self) -> Iterator[tuple[str, _Series]]:
        return itertools.chain(self._young.items(), self._series.items())

    def _state(self, series: str) -> _Series:
        state = self._series.get(series)
        if state is not None:
            self._series.move_to_end(series)
            return state
        # Counted only until a series is one of the topic's own: that is all it decides.
        self._frequency.add(series)
        live = self._frequency.count(series) >= self.seq_len
        state = self._young.pop(series, None) if live else self._young.get(series)
        if state is None:
            state = _Series(self.seq_len, self.n_features)
        if live:
            self._series[series] = state
        else:
            self._young[series] = state
            self._young.move_to_end(series)
        self.trim(self.max_series)
        return state

    def trim(self, max_series: int) -> None:
        """Forget series until at most ``max_series`` are tracked (young ones first)."""
        while len(self) > max_series:
            tier = self._young if self._young else self._series
            name, state = tier.popitem(last=False)
            self._held -= len(state.pending)
            self.evicted += 1
            self.on_evict(name)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget series last fed by ``partitions`` (another consumer now owns them), and
        events of those partitions held for reordering."""
        for tier in (self._young, self._series):
            for name in [n for n, s in tier.items() if s.last_partition in partitions]:
                del tier[name]
                self.on_evict(name)  # its other state goes too (not counted as evicted)
        for _, state in self._all():
            kept = [p for p in state.pending if p[2].message.partition not in partitions]
            if len(kept) != len(state.pending):
                state.pending = kept
                heapq.heapify(state.pending)
        self._held = sum(len(state.pending) for _, state in self._all())
        self._replay = None

    def unreleased(self) -> dict[int, int]:
        """Per partition, the lowest offset of an event held for reordering: its window is
        not emitted yet."""
        if not self._held:
            return {}
        lowest: dict[int, int] = {}
        for _, state in self._all():
            for _, _, held in state.pending:
                partition, offset = held.message.partition, held.message.offset
                lowest[partition] = min(lowest.get(partition, offset), offset)
        return lowest

    def add(self, event: Event, received_at: float = 0.0) -> Window | None:
        """Append one event; return the window it completes, if any.

        With reordering, one event can release several held ones; the windows they
        complete are returned by :meth:`add_all`.
        """
        ready = self.add_all(event, received_at)
        return ready[-1] if ready else None

    def add_all(self, event: Event, received_at: float = 0.0) -> list[Window]:
        if self.seq_len == 1 and self.out_of_order == "accept":
            return [_single(event, received_at)]
        if self._replay is not None and event.message.partition not in self._replay:
            self._replay = None
        state = self._state(event.series)
        if self.out_of_order == "accept":  # rows of tabular topics: order carries no meaning
            return self._append(state, event, received_at)
        if self.out_of_order == "drop":
            if event.timestamp_ms < state.last_ts:
                self.dropped_late += 1
                return []
            return self._append(state, event, received_at)
        if event.timestamp_ms < state.last_ts:
            self.dropped_late += 1
            return []
        heapq.heappush(state.pending, (event.timestamp_ms, next(self._tiebreak), event))
        self._held += 1
        newest = max(ts for ts, _, _ in state.pending)
        ready = []
        while state.pending and state.pending[0][0] <= newest - self.lateness_ms:
            _, _, held = heapq.heappop(state.pending)
            self._held -= 1
            window = self._append(state, held, received_at)
            ready.extend(window)
        return ready

    def replay_points(self, exact: bool = False) -> dict[int, int]:
        """Per partition, the lowest offset any series still needs: where a restart resumes.
        Not ``exact``: as computed up to ``replay_refresh_s`` ago (never past the true ones)."""
        now = time.monotonic()
        if exact or self._replay is None or now - self._replay_at >= self.replay_refresh_s:
            points: dict[int, int] = {}
            for _, state in self._all():
                for partition, offset in state.replay_from(self.seq_len).items():
                    points[partition] = min(points.get(partition, offset), offset)
            self._replay, self._replay_at = points, now
        return dict(self._replay)

    def _on_stride(self, state: _Series) -> bool:
        """Whether the full window ``state`` holds is one of every ``stride``, decided by the
        window's own events alone: a restart rebuilds windows from a replay point (a count
        of events would start there), so it finds the same windows due, and an alert raised
        again keeps its ``alert_id``.

        A window is *on the grid* when its newest event is the first of a cell of event
        time, or ``stride``, ``2 stride``, ... events after it; a cell lasts ``stride`` times
        the mean spacing of the window's last ``span`` events. A window is due when it is on
        the grid, or when none of the ``stride - 1`` windows before it was (their events are
        still in the ring): evenly spaced events get exactly one window every ``stride``
        events, and uneven ones never go longer than ``stride`` events without one.
        """
        stamps = np.concatenate(
            (state.positions[state.head :, 0], state.positions[: state.head, 0])
        )
        if self._on_grid(stamps, 0):
            return True
        if self.seq_len <= self.stride:  # no room in the ring to look back
            return False
        return not any(self._on_grid(stamps, back) for back in range(1, self.stride))

    def _on_grid(self, stamps: np.ndarray, back: int) -> bool:
        """Whether the window ending ``back`` events before the newest is on the grid,
        judged from its last ``span`` event times (oldest first in ``stamps``)."""
        span = self.seq_len - self.stride + 1 if self.seq_len > self.stride else self.seq_len
        times = stamps[len(stamps) - back - span : len(stamps) - back]
        newest, oldest = int(times[-1]), int(times[0])
        cell = max(1, self.stride * (newest - oldest) // (span - 1))
        in_cell = span - int(np.searchsorted(times, newest - newest % cell))
        # A span inside one cell cannot count its events: on the grid, so none is skipped.
        return in_cell >= span or (in_cell - 1) % self.stride == 0

    def _append(self, state: _Series, event: Event, received_at: float) -> list[Window]:
        msg = event.message
        state.append(event.values, event.timestamp_ms, msg.offset, msg.partition)
        count = state.count
        if count == self.seq_len and event.series in self._young:
            del self._young[event.series]  # it filled a window: one of the topic's own
            self._series[event.series] = state
        if count < self.seq_len or (self.stride > 1 and not self._on_stride(state)):
            return []
        oldest, newest = state.positions[state.head], state.positions[state._slot(0)]
        return [
            Window(
                topic=msg.topic,
                series=event.series,
                values=state.window(),
                start_ts_ms=int(oldest[0]),
                end_ts_ms=int(newest[0]),
                start_offset=int(oldest[1]),
                end_offset=int(newest[1]),
                partition=msg.partition,
                received_at=received_at,
            )
        ]


def _single(event: Event, received_at: float) -> Window:
    msg = event.message
    return Window(
        topic=msg.topic,
        series=event.series,
        values=event.values[None, :],
        start_ts_ms=event.timestamp_ms,
        end_ts_ms=event.timestamp_ms,
        start_offset=msg.offset,
        end_offset=msg.offset,
        partition=msg.partition,
        received_at=received_at,
    )
