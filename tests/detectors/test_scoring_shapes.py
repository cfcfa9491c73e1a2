"""Scoring at several compiled shapes without giving up batch invariance."""

from __future__ import annotations

import threading

import numpy as np

from streamdet.detectors.keras_base import score_at_verified_shapes, tf


class ShapeSensitiveScorer:
    """Rounds like a kernel chosen by batch size: below ``exact_from`` rows every output is
    off in its last bits, as XLA's small-batch kernels are on a narrow model."""

    def __init__(self, exact_from: int) -> None:
        self.exact_from = exact_from
        self.calls: list[int] = []
        self.calls_from_this_thread: list[int] = []

    def __call__(self, batch: tf.Tensor) -> tf.Tensor:
        rows = int(batch.shape[0])
        self.calls.append(rows)
        if threading.current_thread() is threading.main_thread():
            self.calls_from_this_thread.append(rows)
        out = tf.reduce_sum(batch, axis=1)
        return out if rows >= self.exact_from else out * (1 + 1e-6)


def test_shapes_that_round_differently_are_never_used_and_scores_stay_identical() -> None:
    rng = np.random.default_rng(0)
    data = rng.random((700, 5)).astype(np.float32)
    scorer = ShapeSensitiveScorer(exact_from=64)
    (together,) = score_at_verified_shapes(scorer, data, 64, wait_for_checks=True)
    alone = np.concatenate(
        [
            score_at_verified_shapes(scorer, data[i : i + 1], 64, wait_for_checks=True)[0]
            for i in range(9)
        ]
    )
    assert np.array_equal(alone, together[:9])
    # The 1- and 8-row shapes were probed once and refused; the 1024-row one is used.
    assert 1 not in scorer.calls[-9:] and 8 not in scorer.calls[-9:]
    assert 1024 in scorer.calls


def test_a_lone_window_costs_one_small_call_where_the_small_shape_agrees() -> None:
    data = np.random.default_rng(1).random((1, 5)).astype(np.float32)
    scorer = ShapeSensitiveScorer(exact_from=1)
    score_at_verified_shapes(scorer, data, 64, wait_for_checks=True)  # probes the 1-row shape
    scorer.calls.clear()
    score_at_verified_shapes(scorer, data, 64)
    assert scorer.calls == [1]


def test_until_its_check_has_passed_a_shape_is_not_used_and_nothing_waits_for_it() -> None:
    data = np.random.default_rng(3).random((1, 5)).astype(np.float32)
    scorer = ShapeSensitiveScorer(exact_from=1)
    (first,) = score_at_verified_shapes(scorer, data, 64)
    # The reference shape served while the check started in the background.
    assert scorer.calls_from_this_thread == [64]
    (later,) = score_at_verified_shapes(scorer, data, 64, wait_for_checks=True)
    assert np.array_equal(first, later) and scorer.calls[-1] == 1


def test_batch_size_bounds_each_call_but_not_the_scores() -> None:
    data = np.random.default_rng(2).random((300, 4)).astype(np.float32)
    scorer = ShapeSensitiveScorer(exact_from=8)
    (default,) = score_at_verified_shapes(scorer, data, 64, wait_for_checks=True)
    scorer.calls.clear()
    (bounded,) = score_at_verified_shapes(scorer, data, 64, max_rows=10, wait_for_checks=True)
    assert np.array_equal(default, bounded)
    assert max(scorer.calls) <= 64 and 8 in scorer.calls


def test_a_real_decoder_scores_every_window_the_same_at_every_shape_it_uses() -> None:
    from streamdet.detectors.seq2seq import OutlierSeq2Seq

    t = np.arange(400, dtype=np.float32)
    detector = OutlierSeq2Seq(1, 8, threshold=None, latent_dim=8, seed=0)
    detector.fit(np.sin(t / 5)[:, None], epochs=1, verbose=False)
    windows = np.random.default_rng(4).random((300, 8, 1)).astype(np.float32)
    (reference,) = score_at_verified_shapes(detector._decode, windows, 64, max_rows=64)[:1]
    for rows in (1, 9, 300):
        (seen,) = score_at_verified_shapes(
            detector._decode, windows[:rows], 64, wait_for_checks=True
        )[:1]
        assert np.array_equal(seen, reference[:rows])
