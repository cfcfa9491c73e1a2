from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.errors import InvalidInputError
from streamdet.thresholds import AnomalyLikelihood, percentile_threshold, top_percent_mean
from streamdet.windows import RingBuffer, sliding_windows


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


def test_feature_wise_threshold_differs_per_feature_and_scalar_pools_them():
    rng = np.random.default_rng(0)
    scores = np.stack([rng.normal(0, 1, 5000), rng.normal(10, 1, 5000)], axis=1)
    per_feature = percentile_threshold(scores, 95, feature_wise=True)
    scalar = percentile_threshold(scores, 95)
    assert per_feature.shape == (2,)
    assert per_feature[0] == pytest.approx(1.645, abs=0.1)
    assert per_feature[1] == pytest.approx(11.645, abs=0.1)
    assert per_feature[0] < scalar < per_feature[1] + 1e-9


def test_outlier_perc_scores_an_instance_by_its_worst_cells():
    cells = np.zeros((2, 10, 1))
    cells[1, 3, 0] = 10.0  # one bad cell in instance 1
    assert top_percent_mean(cells, 10).tolist() == [0.0, 10.0]
    assert top_percent_mean(cells, 100).tolist() == [0.0, 1.0]
    with pytest.raises(InvalidInputError, match="outlier_perc"):
        top_percent_mean(cells, 0)


def test_likelihood_streaming_equals_batch_and_flags_a_jump():
    rng = np.random.default_rng(1)
    scores = np.r_[rng.gamma(2.0, 0.1, 400), [3.0, 3.0]]
    policy = AnomalyLikelihood(history=200, short_window=2, learning_period=50)
    streamed = [policy.update(s) for s in scores]
    np.testing.assert_allclose(streamed, policy.transform(scores))
    assert streamed[10] == 0.5
    assert streamed[-1] > 0.9999
    assert np.median(streamed[100:400]) < 0.8
