from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.core.errors import InvalidInputError
from streamdet.core.windows import RingBuffer, sliding_windows


@settings(max_examples=50, deadline=None)
@given(
    capacity=st.integers(1, 20),
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=80),
)
def test_ring_buffer_window_is_the_latest_values_in_order(capacity: int, values: list[float]):
    ring = RingBuffer(capacity, n_features=1)
    for v in values:
        ring.append([v])
    if len(values) < capacity:
        assert not ring.full
        with pytest.raises(InvalidInputError, match="needs"):
            ring.window()
    else:
        expected = np.asarray(values[-capacity:], dtype=np.float32)
        np.testing.assert_array_equal(ring.window()[:, 0], expected)


def test_sliding_windows_shape_stride_and_errors():
    series = np.arange(20, dtype=np.float32).reshape(10, 2)
    windows = sliding_windows(series, seq_len=4, stride=3)
    assert windows.shape == (3, 4, 2)
    np.testing.assert_array_equal(windows[1, 0], series[3])
    with pytest.raises(InvalidInputError, match="shorter than one window"):
        sliding_windows(series, seq_len=11)
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        sliding_windows(np.array([1.0, np.nan, 2.0]), seq_len=2)
