"""Choosing the number of epochs on held-out normal data (no labels)."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import silent
from streamdet.detectors import Seq2SeqDetector
from streamdet.detectors.base import holdout_split
from streamdet.detectors.keras_base import EpochSelection, keras, train_epochs
from tests.helpers import make_series


def _one_weight_model() -> keras.Model:
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    model.set_weights([np.zeros((1, 1), np.float32)])
    return model


def test_selection_keeps_the_best_epoch_and_stops_after_patience():
    model = _one_weight_model()
    # Epoch k sets the weight to k; the scripted validation losses are best after epoch 2.
    losses = {1.0: 3.0, 2.0: 1.0, 3.0: 2.0, 4.0: 5.0, 5.0: 0.5}
    epoch = {"n": 0}

    def step(_batch: np.ndarray) -> dict[str, float]:
        return {"loss": 0.0}

    def after_batches() -> float:
        epoch["n"] += 1
        model.set_weights([np.full((1, 1), epoch["n"], np.float32)])
        return losses[float(epoch["n"])]

    selection = EpochSelection(after_batches, (model,), patience=2)
    history = train_epochs(
        step,
        (np.zeros((4, 1), np.float32),),
        epochs=5,
        batch_size=4,
        label="t",
        progress=silent,
        selection=selection,
    )
    # Epochs 3 and 4 brought nothing better: stopped before epoch 5 (whose 0.5 is never seen).
    assert [h["val_loss"] for h in history] == [3.0, 1.0, 2.0, 5.0]
    assert (selection.best_epoch, selection.best_loss) == (2, 1.0)
    assert model.get_weights()[0].item() == 2.0


def test_without_patience_every_epoch_runs_and_the_best_is_restored():
    model = _one_weight_model()
    values = iter([4.0, 2.0, 3.0])
    count = {"n": 0}

    def loss() -> float:
        count["n"] += 1
        model.set_weights([np.full((1, 1), count["n"], np.float32)])
        return next(values)

    selection = EpochSelection(loss, (model,))
    history = train_epochs(
        lambda _b: {"loss": 0.0},
        (np.zeros((2, 1), np.float32),),
        epochs=3,
        batch_size=2,
        label="t",
        progress=silent,
        selection=selection,
    )
    assert len(history) == 3 and selection.best_epoch == 2
    assert model.get_weights()[0].item() == 2.0


def test_holdout_split_refuses_shares_outside_zero_to_one():
    for share in (1.0, -0.1):
        with pytest.raises(InvalidInputError, match="validation_fraction"):
            holdout_split(np.arange(10), share)
    train, held_out = holdout_split(np.arange(20), 0.9)
    assert len(train) == 2 and held_out is not None and len(held_out) == 18


def test_seq2seq_keeps_the_epoch_with_the_lowest_held_out_loss():
    series = make_series(600, n_features=1, seed=3)[0].astype(np.float32)
    # The held-out tail follows another rhythm, and a large learning rate fits the first
    # part ever tighter: the held-out loss is lowest early, so restoring must matter.
    series[450:] = np.sin(np.arange(150) * 2 * np.pi / 7)[:, None]
    settings = {"seq_len": 16, "latent_dim": 8, "stride": 4, "learning_rate": 0.2}
    detector = Seq2SeqDetector(**settings, epochs=6, validation_fraction=0.25, seed=0)
    training = detector.fit(series, verbose=False)
    total = len(range(0, len(series) - 16 + 1, 4))
    held_out = training["validation_windows"]
    assert held_out == round(total * 0.25) and training["training_windows"] == total - held_out
    val = [epoch["val_loss"] for epoch in training["history"]]
    best = int(np.argmin(val)) + 1
    assert len(val) == 6 and training["best_epoch"] == best
    assert training["best_val_loss"] == pytest.approx(min(val))
    assert best < 6
    # The same training stopped at the kept epoch gives the same model: the detector serves
    # the best epoch's weights, not the last epoch's.
    replay = Seq2SeqDetector(**settings, epochs=best, validation_fraction=0.25, seed=0)
    replay.fit(series, verbose=False)
    windows = np.stack([series[s : s + 16] for s in range(0, len(series) - 16 + 1, 4)])
    np.testing.assert_allclose(
        detector.score(windows).instance_score, replay.score(windows).instance_score, rtol=1e-5
    )


def test_seq2seq_patience_stops_training_early():
    series = make_series(600, n_features=1, seed=3)[0].astype(np.float32)
    series[450:] = np.sin(np.arange(150) * 2 * np.pi / 7)[:, None]
    detector = Seq2SeqDetector(
        seq_len=16,
        latent_dim=8,
        stride=4,
        learning_rate=0.2,
        epochs=10,
        validation_fraction=0.25,
        patience=2,
        seed=0,
    )
    training = detector.fit(series, verbose=False)
    assert training["epochs"] == training["best_epoch"] + 2 < 10


def test_a_training_traces_its_step_once_with_equal_batches_and_a_built_optimizer():
    """950 rows at batch_size 64: 15 batches of 63 (the 5 rows left out differ between
    epochs), and the optimizer's slots exist before the first call, so ``tf.function``
    traces the step once instead of three times (seconds of CPU each, every retraining)."""
    import tensorflow as tf

    model = _one_weight_model()
    optimizer = keras.optimizers.Adam(1e-2)
    sizes: list[int] = []
    seen: list[set[float]] = []

    @tf.function
    def step(x: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - 1.0))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return {"loss": loss}

    def record(x: np.ndarray) -> dict[str, tf.Tensor]:
        sizes.append(len(x))
        seen[-1].update(np.asarray(x)[:, 0].tolist())
        return step(x)

    rows = np.arange(950, dtype=np.float32)[:, None]
    for epoch in range(3):
        seen.append(set())
        train_epochs(
            record,
            (rows,),
            epochs=1,
            batch_size=64,
            label="t",
            progress=silent,
            seed=epoch,
            optimizer=optimizer,
            variables=model.trainable_variables,
        )
    assert set(sizes) == {63} and len(sizes) == 3 * 15
    assert all(len(rows_seen) == 945 for rows_seen in seen)
    assert len(set.union(*seen)) > 945  # a different few left out each epoch
    assert step.experimental_get_tracing_count() == 1
    # Fewer rows than one batch: one batch of all of them.
    sizes.clear()
    seen.append(set())
    train_epochs(record, (rows[:10],), epochs=1, batch_size=64, label="t", progress=silent)
    assert sizes == [10]
