"""Sliding windows over series: batch slicing for training (the live per-series buffers are
:mod:`streamdet.stream.window_store`).

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
