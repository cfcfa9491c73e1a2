"""Sliding windows over series: batch slicing for training and per-series ring buffers.

Pure numpy: nothing here knows about Kafka, Prometheus or TensorFlow.
"""

from __future__ import annotations

import numpy as np

from streamdet.core.errors import InvalidInputError


def as_series(values: np.ndarray, n_features: int | None = None) -> np.ndarray:
    """Return ``values`` as a finite float32 array of shape (T, n_features).

    A 1-D array is taken as a univariate series.

    >>> as_series(np.arange(3)).shape
    (3, 1)
    """
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise InvalidInputError(
            f"a series must have shape (T,) or (T, n_features); got shape {array.shape}"
        )
    if n_features is not None and array.shape[1] != n_features:
        raise InvalidInputError(
            f"expected {n_features} feature(s) per time step, got {array.shape[1]}"
        )
    check_finite(array, "series")
    return array


def check_finite(array: np.ndarray, what: str) -> None:
    """Raise :class:`InvalidInputError` naming the first NaN or inf in ``array``."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidInputError(f"{what} contains NaN or inf (first at index {where})")


def sliding_windows(series: np.ndarray, seq_len: int, stride: int = 1) -> np.ndarray:
    """Cut a (T, F) series into windows of shape (n_windows, seq_len, F).

    The result is a read-only strided view, so cutting costs no copy.

    >>> sliding_windows(np.arange(6.0)[:, None], seq_len=4, stride=2)[:, :, 0]
    array([[0., 1., 2., 3.],
           [2., 3., 4., 5.]], dtype=float32)
    """
    if seq_len < 1 or stride < 1:
        raise InvalidInputError(f"seq_len and stride must be >= 1; got {seq_len}, {stride}")
    data = as_series(series)
    if data.shape[0] < seq_len:
        raise InvalidInputError(
            f"the series has {data.shape[0]} time steps, shorter than one window "
            f"(seq_len={seq_len})"
        )
    view = np.lib.stride_tricks.sliding_window_view(data, seq_len, axis=0)
    # sliding_window_view puts the window axis last: (n, F, seq_len) -> (n, seq_len, F)
    return view[::stride].transpose(0, 2, 1)


class RingBuffer:
    """Fixed-size window of the most recent events of one series, O(1) per append.

    The buffer stores ``2 * capacity`` rows and writes every value twice, so the
    latest ``capacity`` rows are always one contiguous slice: reading a window never copies
    more than the window itself.

    >>> ring = RingBuffer(capacity=3, n_features=1)
    >>> for v in range(5):
    ...     ring.append([v])
    >>> ring.window()[:, 0]
    array([2., 3., 4.], dtype=float32)
    """

    __slots__ = ("_data", "_head", "capacity", "count", "n_features")

    def __init__(self, capacity: int, n_features: int, dtype: type = np.float32) -> None:
        if capacity < 1 or n_features < 1:
            raise InvalidInputError("a ring buffer needs capacity >= 1 and n_features >= 1")
        self.capacity = capacity
        self.n_features = n_features
        self._data = np.zeros((2 * capacity, n_features), dtype=dtype)
        self._head = 0
        self.count = 0

    def append(self, values: np.ndarray | list[float]) -> None:
        """Add one time step of ``n_features`` values."""
        self._data[self._head] = values
        self._data[self._head + self.capacity] = values
        self._head = (self._head + 1) % self.capacity
        self.count += 1

    @property
    def full(self) -> bool:
        """True once at least ``capacity`` events have been appended."""
        return self.count >= self.capacity

    def last(self, n: int) -> np.ndarray:
        """The latest ``n`` rows (``n <= min(count, capacity)``), oldest first."""
        if not 0 < n <= min(self.count, self.capacity):
            raise InvalidInputError(f"cannot read the last {n} of {self.count} buffered rows")
        end = self._head + self.capacity
        return self._data[end - n : end]

    def window(self) -> np.ndarray:
        """The latest ``capacity`` rows, oldest first (a view; copy it to keep it)."""
        if not self.full:
            raise InvalidInputError(
                f"the buffer holds {self.count} of the {self.capacity} events a window needs"
            )
        return self._data[self._head : self._head + self.capacity]
