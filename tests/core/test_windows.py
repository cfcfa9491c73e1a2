from __future__ import annotations

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError
from streamdet.core.windows import sliding_windows


def test_sliding_windows_shape_stride_and_errors():
    series = np.arange(20, dtype=np.float32).reshape(10, 2)
    windows = sliding_windows(series, seq_len=4, stride=3)
    assert windows.shape == (3, 4, 2)
    np.testing.assert_array_equal(windows[1, 0], series[3])
    with pytest.raises(InvalidInputError, match="shorter than one window"):
        sliding_windows(series, seq_len=11)
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        sliding_windows(np.array([1.0, np.nan, 2.0]), seq_len=2)
