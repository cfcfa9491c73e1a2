"""Per-series sliding windows over decoded events, with out-of-order handling.

>>> store = WindowStore(seq_len=3, n_features=1, stride=2)
>>> from streamdet.core.records import Message
>>> def ev(i, ts):
...     return Event("a", ts, np.array([float(i)], np.float32), Message("t", 0, i, None, b"", ts))
>>> ready = [store.add(ev(i, 1000 * i)) for i in range(6)]
>>> [r.end_offset for r in ready if r is not None]
[2, 4]
>>> store.add(ev(6, 0)) is None, store.dropped_late
(True, 1)
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict

import numpy as np

from streamdet.core.records import Event, Window
from streamdet.core.windows import RingBuffer


class _Series:
    __slots__ = ("last_partition", "last_ts", "mixed", "pending", "positions", "values")

    def __init__(self, seq_len: int, n_features: int) -> None:
        self.values = RingBuffer(seq_len, n_features)
        # timestamp, offset and partition of every buffered event, at full integer precision
        self.positions = RingBuffer(seq_len, 3, dtype=np.int64)
        self.last_ts = -(2**62)
        self.pending: list[tuple[int, int, Event]] = []
        self.last_partition = -1
        self.mixed = False  # events of this series came from more than one partition

    def replay_from(self, seq_len: int) -> dict[int, int]:
        """Per partition, the oldest offset the next window (or a held event) still needs."""
        needed: dict[int, int] = {}
        if self.values.count:
            keep = min(seq_len - 1, self.values.count)
            if keep == 0:
                row = self.positions.last(1)[0]
                needed[int(row[2])] = int(row[1]) + 1
            elif not self.mixed:
                needed[self.last_partition] = int(self.positions.last(keep)[0, 1])
            else:
                for offset, partition in self.positions.last(keep)[:, 1:3].tolist():
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

    At most ``max_series`` series are tracked: beyond that the least recently updated one is
    forgotten (counted in ``evicted``); it starts a new window if it comes back.
    """

    def __init__(
        self,
        seq_len: int,
        n_features: int,
        stride: int = 1,
        out_of_order: str = "drop",
        lateness_ms: int = 0,
        max_series: int = 100_000,
    ) -> None:
        self.seq_len = seq_len
        self.n_features = n_features
        self.stride = stride
        self.out_of_order = out_of_order
        self.lateness_ms = lateness_ms
        self.max_series = max_series
        self.dropped_late = 0
        self.evicted = 0
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._tiebreak = itertools.count()

    def __len__(self) -> int:
        return len(self._series)

    def _state(self, series: str) -> _Series:
        state = self._series.get(series)
        if state is None:
            state = self._series[series] = _Series(self.seq_len, self.n_features)
            while len(self._series) > self.max_series:
                self._series.popitem(last=False)
                self.evicted += 1
        else:
            self._series.move_to_end(series)
        return state

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget series last fed by ``partitions`` (another consumer now owns them), and
        events of those partitions held for reordering."""
        for name in [n for n, s in self._series.items() if s.last_partition in partitions]:
            del self._series[name]
        for state in self._series.values():
            kept = [p for p in state.pending if p[2].message.partition not in partitions]
            if len(kept) != len(state.pending):
                state.pending = kept
                heapq.heapify(state.pending)

    def unreleased(self) -> dict[int, int]:
        """Per partition, the lowest offset of an event held for reordering: its window is
        not emitted yet."""
        lowest: dict[int, int] = {}
        for state in self._series.values():
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
        newest = max(ts for ts, _, _ in state.pending)
        ready = []
        while state.pending and state.pending[0][0] <= newest - self.lateness_ms:
            _, _, held = heapq.heappop(state.pending)
            window = self._append(state, held, received_at)
            ready.extend(window)
        return ready

    def replay_points(self) -> dict[int, int]:
        """Per partition, the lowest offset any series still needs: where a restart resumes."""
        points: dict[int, int] = {}
        for state in self._series.values():
            for partition, offset in state.replay_from(self.seq_len).items():
                points[partition] = min(points.get(partition, offset), offset)
        return points

    def _append(self, state: _Series, event: Event, received_at: float) -> list[Window]:
        state.values.append(event.values)
        msg = event.message
        state.positions.append([event.timestamp_ms, msg.offset, msg.partition])
        if state.last_partition not in (-1, msg.partition):
            state.mixed = True
        state.last_partition = msg.partition
        state.last_ts = event.timestamp_ms
        count = state.values.count
        if count < self.seq_len or (count - self.seq_len) % self.stride:
            return []
        positions = state.positions.window()
        return [
            Window(
                topic=msg.topic,
                series=event.series,
                values=state.values.window().copy(),
                start_ts_ms=int(positions[0, 0]),
                end_ts_ms=int(positions[-1, 0]),
                start_offset=int(positions[0, 1]),
                end_offset=int(positions[-1, 1]),
                partition=int(positions[-1, 2]),
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
