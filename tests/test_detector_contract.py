"""Checks every registered detector must pass, whatever its model."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.detectors import DETECTORS, load_detector


def test_every_registered_detector_has_a_saved_model_fixture(saved_models):
    assert set(saved_models) == set(DETECTORS)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_scores_are_batch_invariant(saved_models, name):
    """The same instance gets the bit-identical score alone, in any batch, at any position:
    replays, alert ids and a threshold set on a training score rely on it."""
    directory, data = saved_models[name]
    detector = load_detector(directory)
    instances = data if name not in ("seq2seq", "vae_lstm") else None
    if instances is None:
        seq_len = detector.input_shape[0]
        instances = np.lib.stride_tricks.sliding_window_view(data, seq_len, axis=0)
        instances = instances.transpose(0, 2, 1)
    instances = np.ascontiguousarray(instances[:150], dtype=np.float32)
    whole = detector.score(instances).instance_score

    rng = np.random.default_rng(0)
    order = rng.permutation(len(instances))
    shuffled = detector.score(instances[order]).instance_score
    np.testing.assert_array_equal(shuffled, whole[order])
    for size in (1, 3, 17, 64, 65, 149):
        picked = rng.choice(len(instances), size, replace=False)
        np.testing.assert_array_equal(
            detector.score(instances[picked]).instance_score, whole[picked], err_msg=f"{size=}"
        )
