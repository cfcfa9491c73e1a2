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

import array
import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from streamdet.core.bounded import FrequencySketch
from streamdet.core.records import Event, Window

# A series' slot in its tier's OrderedDict and the int naming its row (measured with
# tracemalloc: tests/stream/test_window_memory.py checks the total).
_OVERHEAD_BYTES = 150
# Per-series scalars: head, last partition (int32); count, last timestamp and the two
# bases (int64); the row's name pointer.
_SCALAR_BYTES = 2 * 4 + 4 * 8 + 8
_INT32 = np.iinfo(np.int32)
_FIRST_ROWS = 64


class _Rows:
    """Every series' last ``seq_len`` events in rows of a few shared arrays: values
    (float32), and timestamps and offsets as int32 deltas from a per-row base. A million
    series cost a few shared arrays instead of a million small ones (each with its header,
    its allocation and its object): 12 bytes an event instead of 20, and ~200 bytes a
    series instead of ~600.

    A row's base moves to its oldest event when a delta leaves int32; when even the span
    of one row does not fit (events more than 24 days apart in one window, or offsets more
    than 2**31 apart) every row widens to int64 once, for good.

    The arrays grow by doubling, up to ``max_rows``; ``np.zeros`` maps fresh pages for a
    large array, so rows not used yet cost no memory. Rows of forgotten series are reused.
    """

    def __init__(self, seq_len: int, n_features: int, max_rows: int) -> None:
        self.seq_len = seq_len
        self.n_features = n_features
        self.max_rows = max_rows
        rows = min(_FIRST_ROWS, max_rows)
        self.values = np.zeros((rows, seq_len, n_features), np.float32)
        # Timestamps and offsets minus the row's base, flat (row * seq_len + slot).
        self.stamps = np.zeros(rows * seq_len, np.int32)
        self.offsets = np.zeros(rows * seq_len, np.int32)
        # Scalars in typed arrays: read from Python as ints, without numpy's scalar boxing.
        self.head = array.array("i", bytes(4 * rows))  # the next event's slot
        self.count = array.array("q", bytes(8 * rows))
        self.last_ts = array.array("q", bytes(8 * rows))
        self.last_partition = array.array("i", bytes(4 * rows))
        self.stamp_base = array.array("q", bytes(8 * rows))
        self.offset_base = array.array("q", bytes(8 * rows))
        self.names: list[str | None] = [None] * rows
        self.free = list(range(rows - 1, -1, -1))
        # Rare per-row state, kept aside: the partition of every event of a series that
        # spans partitions, and events held for reordering.
        self.partitions: dict[int, np.ndarray] = {}
        self.pending: dict[int, list[tuple[int, int, Event]]] = {}
        self._views()

    def _views(self) -> None:
        # Element access through a memoryview costs a third of numpy's.
        self._stamp_view = memoryview(self.stamps)
        self._offset_view = memoryview(self.offsets)
        self._value_view = memoryview(self.values.reshape(-1))
        self._wide = self.stamps.dtype == np.int64

    @property
    def capacity(self) -> int:
        return len(self.names)

    def per_row_bytes(self) -> int:
        position = self.stamps.itemsize + self.offsets.itemsize
        return self.seq_len * (4 * self.n_features + position) + _SCALAR_BYTES

    def take(self, name: str) -> int:
        """A row for a new series, every scalar reset (its events are not: count says
        how many are real)."""
        if not self.free:
            self._grow()
        row = self.free.pop()
        self.names[row] = name
        self.head[row] = 0
        self.count[row] = 0
        self.last_ts[row] = -(2**62)
        self.last_partition[row] = -1
        return row

    def release(self, row: int) -> None:
        self.names[row] = None
        self.count[row] = 0  # holds no events: no replay point until it is taken again
        self.partitions.pop(row, None)
        self.pending.pop(row, None)
        self.free.append(row)

    def _grow(self) -> None:
        old = self.capacity
        new = min(2 * old, max(self.max_rows, old + 1))
        for name in ("values", "stamps", "offsets"):
            current = getattr(self, name)
            shape = (new, *current.shape[1:]) if current.ndim > 1 else (new * self.seq_len,)
            grown = np.zeros(shape, current.dtype)
            grown[: len(current)] = current
            setattr(self, name, grown)
        extra = new - old
        for scalars in (self.head, self.count, self.last_ts, self.last_partition,
                        self.stamp_base, self.offset_base):  # fmt: skip
            scalars.frombytes(bytes(scalars.itemsize * extra))
        self.names.extend([None] * extra)
        self.free.extend(range(new - 1, old - 1, -1))
        self._views()

    def append(self, row: int, values: np.ndarray, timestamp_ms: int, offset: int,
               partition: int) -> int:  # fmt: skip
        """Add an event to ``row``; returns how many events the row has seen."""
        slot = self.head[row]
        at = row * self.seq_len + slot
        count = self.count[row]
        if count == 0:
            self.stamp_base[row] = timestamp_ms
            self.offset_base[row] = offset
        if self.n_features == 1:
            self._value_view[at] = values.item()
        else:
            self.values[row, slot] = values
        stamp = timestamp_ms - self.stamp_base[row]
        if self._wide or -(2**31) <= stamp < 2**31:
            self._stamp_view[at] = stamp
        else:
            self._put_far(True, row, slot, timestamp_ms)
        position = offset - self.offset_base[row]
        if self._wide or -(2**31) <= position < 2**31:
            self._offset_view[at] = position
        else:
            self._put_far(False, row, slot, offset)
        last_partition = self.last_partition[row]
        if (last_partition not in (partition, -1)) or row in self.partitions:
            spanned = self.partitions.get(row)
            if spanned is None:
                spanned = self.partitions[row] = np.full(self.seq_len, last_partition, np.int32)
            spanned[slot] = partition
        self.last_partition[row] = partition
        self.last_ts[row] = timestamp_ms
        self.head[row] = slot + 1 if slot + 1 < self.seq_len else 0
        self.count[row] = count + 1
        return count + 1

    def _put_far(self, stamp: bool, row: int, slot: int, value: int) -> None:
        """Store a value whose delta leaves int32: move the row's base to its lowest kept
        value, or widen every row when the row's own span does not fit."""
        deltas = self.stamps if stamp else self.offsets
        bases = self.stamp_base if stamp else self.offset_base
        # The events that stay (the one in ``slot`` is being replaced).
        held = min(self.count[row], self.seq_len - 1)
        kept_at = row * self.seq_len + (slot - 1 - np.arange(held)) % self.seq_len
        kept = deltas[kept_at].astype(np.int64) + bases[row]
        candidates = [value, *kept.tolist()]
        lowest, highest = min(candidates), max(candidates)
        if highest - lowest > _INT32.max:
            self.stamps = self.stamps.astype(np.int64)
            self.offsets = self.offsets.astype(np.int64)
            self._views()
            deltas = self.stamps if stamp else self.offsets
        else:
            deltas[kept_at] = kept - lowest
            bases[row] = lowest
        deltas[row * self.seq_len + slot] = value - bases[row]

    def slot(self, row: int, back: int) -> int:
        """The slot of the event ``back`` events before the newest (0: the newest)."""
        return (self.head[row] - 1 - back) % self.seq_len

    def stamp(self, row: int, slot: int) -> int:
        return self._stamp_view[row * self.seq_len + slot] + self.stamp_base[row]

    def offset(self, row: int, slot: int) -> int:
        return self._offset_view[row * self.seq_len + slot] + self.offset_base[row]

    def window(self, row: int) -> np.ndarray:
        """The last ``seq_len`` values, oldest first (a copy)."""
        head = self.head[row]
        values = self.values[row]
        return np.concatenate((values[head:], values[:head]))

    def ordered_stamps(self, row: int) -> np.ndarray:
        head, start = self.head[row], row * self.seq_len
        stamps = self.stamps[start : start + self.seq_len].astype(np.int64) + self.stamp_base[row]
        return np.concatenate((stamps[head:], stamps[:head]))

    def replay_from(self, row: int) -> dict[int, int]:
        """Per partition, the oldest offset the next window (or a held event) of ``row``
        still needs."""
        needed: dict[int, int] = {}
        count = self.count[row]
        if count:
            keep = min(self.seq_len - 1, count)
            spanned = self.partitions.get(row)
            if keep == 0:
                needed[self.last_partition[row]] = self.offset(row, self.slot(row, 0)) + 1
            elif spanned is None:
                needed[self.last_partition[row]] = self.offset(row, self.slot(row, keep - 1))
            else:
                for back in range(keep):
                    slot = self.slot(row, back)
                    partition, offset = int(spanned[slot]), self.offset(row, slot)
                    needed[partition] = min(needed.get(partition, offset), offset)
        for _, _, held in self.pending.get(row, ()):
            partition, offset = held.message.partition, held.message.offset
            needed[partition] = min(needed.get(partition, offset), offset)
        return needed

    def replay_all(self) -> dict[int, int]:
        """Per partition, the oldest offset any row still needs: the common rows (one
        partition, nothing held) at once in numpy, the rare ones one by one."""
        count = np.frombuffer(self.count, np.int64)
        used = np.flatnonzero(count > 0)
        rare = set(self.partitions) | set(self.pending)
        if rare:
            used = used[~np.isin(used, np.fromiter(rare, np.int64, len(rare)))]
        points: dict[int, int] = {}
        if len(used):
            keep = np.minimum(self.seq_len - 1, count[used])
            back = np.maximum(keep - 1, 0)
            head = np.frombuffer(self.head, np.int32)[used]
            at = used * self.seq_len + (head - 1 - back) % self.seq_len
            bases = np.frombuffer(self.offset_base, np.int64)[used]
            offsets = self.offsets[at].astype(np.int64) + bases + (keep == 0)
            partitions = np.frombuffer(self.last_partition, np.int32)[used]
            for partition in np.unique(partitions).tolist():
                points[partition] = int(offsets[partitions == partition].min())
        for row in rare:
            for partition, offset in self.replay_from(row).items():
                points[partition] = min(points.get(partition, offset), offset)
        return points


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
        self._rows = _Rows(seq_len, n_features, max_series)
        self.dropped_late = 0
        self.evicted = 0
        # Series name -> its row, least recently updated first.
        self._young: OrderedDict[str, int] = OrderedDict()  # presumed invented
        self._series: OrderedDict[str, int] = OrderedDict()  # sent seq_len events
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

    @property
    def series_bytes(self) -> int:
        """Memory one tracked series costs here: its rows, its scalars and its slot in the
        name map (a series that spans partitions adds 4 bytes an event; int64 positions,
        once widened, 8)."""
        return self._rows.per_row_bytes() + _OVERHEAD_BYTES

    def established(self, series: str) -> bool:
        """Whether ``series`` has filled a window since it was last forgotten (always, for
        one-event windows: rows and images keep no per-series buffer)."""
        if self.seq_len == 1 and self.out_of_order == "accept":
            return True
        row = self._series.get(series)
        return row is not None and self._rows.count[row] >= self.seq_len

    def _all(self) -> Iterator[tuple[str, int]]:
        return itertools.chain(self._young.items(), self._series.items())

    def _row(self, series: str) -> int:
        row = self._series.get(series)
        if row is not None:
            self._series.move_to_end(series)
            return row
        # Counted only until a series is one of the topic's own: that is all it decides.
        self._frequency.add(series)
        live = self._frequency.count(series) >= self.seq_len
        row = self._young.pop(series, None) if live else self._young.get(series)
        if row is None:
            self.trim(self.max_series - 1)
            row = self._rows.take(series)
        if live:
            self._series[series] = row
        else:
            self._young[series] = row
            self._young.move_to_end(series)
        return row

    def trim(self, max_series: int) -> None:
        """Forget series until at most ``max_series`` are tracked (young ones first)."""
        while len(self) > max_series:
            tier = self._young if self._young else self._series
            name, row = tier.popitem(last=False)
            self._forget(row)
            self.evicted += 1
            self.on_evict(name)

    def _forget(self, row: int) -> None:
        self._held -= len(self._rows.pending.get(row, ()))
        self._rows.release(row)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget series last fed by ``partitions`` (another consumer now owns them), and
        events of those partitions held for reordering."""
        rows = self._rows
        last = np.frombuffer(rows.last_partition, np.int32)
        for row in np.flatnonzero(np.isin(last, list(partitions))).tolist():
            name = rows.names[row]
            if name is None:
                continue
            del (self._series if name in self._series else self._young)[name]
            self._forget(row)
            self.on_evict(name)  # its other state goes too (not counted as evicted)
        for row, pending in list(rows.pending.items()):
            kept = [p for p in pending if p[2].message.partition not in partitions]
            if len(kept) != len(pending):
                heapq.heapify(kept)
                rows.pending[row] = kept
        self._held = sum(len(pending) for pending in rows.pending.values())
        self._replay = None

    def unreleased(self) -> dict[int, int]:
        """Per partition, the lowest offset of an event held for reordering: its window is
        not emitted yet."""
        if not self._held:
            return {}
        lowest: dict[int, int] = {}
        for pending in self._rows.pending.values():
            for _, _, held in pending:
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
        row = self._row(event.series)
        if self.out_of_order == "accept":  # rows of tabular topics: order carries no meaning
            return self._append(row, event, received_at)
        if event.timestamp_ms < self._rows.last_ts[row]:
            self.dropped_late += 1
            return []
        if self.out_of_order == "drop":
            return self._append(row, event, received_at)
        pending = self._rows.pending.setdefault(row, [])
        heapq.heappush(pending, (event.timestamp_ms, next(self._tiebreak), event))
        self._held += 1
        newest = max(ts for ts, _, _ in pending)
        ready = []
        while pending and pending[0][0] <= newest - self.lateness_ms:
            _, _, held = heapq.heappop(pending)
            self._held -= 1
            ready.extend(self._append(row, held, received_at))
        if not pending:
            del self._rows.pending[row]
        return ready

    def replay_points(self, exact: bool = False) -> dict[int, int]:
        """Per partition, the lowest offset any series still needs: where a restart resumes.
        Not ``exact``: as computed up to ``replay_refresh_s`` ago (never past the true ones)."""
        now = time.monotonic()
        if exact or self._replay is None or now - self._replay_at >= self.replay_refresh_s:
            self._replay, self._replay_at = self._rows.replay_all(), now
        return dict(self._replay)

    def _on_stride(self, row: int) -> bool:
        """Whether the full window ``row`` holds is one of every ``stride``, decided by the
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
        stamps = self._rows.ordered_stamps(row)
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

    def _append(self, row: int, event: Event, received_at: float) -> list[Window]:
        msg = event.message
        rows = self._rows
        count = rows.append(row, event.values, event.timestamp_ms, msg.offset, msg.partition)
        if count == self.seq_len and event.series in self._young:
            del self._young[event.series]  # it filled a window: one of the topic's own
            self._series[event.series] = row
        if count < self.seq_len or (self.stride > 1 and not self._on_stride(row)):
            return []
        oldest, newest = rows.head[row], rows.slot(row, 0)
        return [
            Window(
                topic=msg.topic,
                series=event.series,
                values=rows.window(row),
                start_ts_ms=rows.stamp(row, oldest),
                end_ts_ms=rows.stamp(row, newest),
                start_offset=rows.offset(row, oldest),
                end_offset=rows.offset(row, newest),
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
