"""VAE-LSTM detector (Lin et al., ICASSP 2020).

A convolutional VAE embeds short windows of length ``window`` into a code of size
``code_size``. An LSTM, trained on the frozen VAE's embeddings of ``n_windows`` consecutive
non-overlapping windows, predicts each next embedding from the ones before it. A sequence
of ``window * n_windows`` time steps is scored by decoding the ``n_windows - 1`` predicted
embeddings back into windows and summing their squared error against the real windows:
the VAE captures the local shape, the LSTM the longer-term structure between windows.

>>> import numpy as np
>>> t = np.arange(800, dtype="float32")
>>> det = VAELSTMDetector(window=8, n_windows=4, epochs_vae=1, epochs_lstm=1, seed=0)
>>> summary = det.fit(np.sin(t / 4))
>>> det.infer_threshold(np.sin(t / 4), threshold_perc=99)
>>> det.predict(np.sin(t[:40] / 4))["data"]["instance_score"].shape
(9,)
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, silent
from streamdet.core.windows import as_series, sliding_windows
from streamdet.detectors.base import ContractCase, Scores, register
from streamdet.detectors.keras_base import (
    KerasDetector,
    keras,
    score_at_verified_shapes,
    set_seed,
    tf,
    train_epochs,
)


@keras.saving.register_keras_serializable(package="streamdet")
class GaussianSample(keras.layers.Layer):
    """Reparameterised draw z = mean + exp(log_var / 2) * eps (the mean when not training)."""

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        mean, log_var = inputs
        if not training:
            return mean
        eps = keras.random.normal(keras.ops.shape(mean))
        return mean + keras.ops.exp(0.5 * log_var) * eps


def build_window_vae(
    window: int, n_features: int, code_size: int, filters: int
) -> tuple[keras.Model, keras.Model]:
    """Convolutional encoder (-> mean, log_var) and decoder for windows of length ``window``."""
    if window < 8:
        raise InvalidInputError(f"vae_lstm: window must be >= 8; got {window}")
    reduced = math.ceil(math.ceil(window / 2) / 2)
    inputs = keras.Input((window, n_features), name="window")
    h = keras.layers.Conv1D(filters, 3, strides=2, padding="same", activation="gelu")(inputs)
    h = keras.layers.Conv1D(2 * filters, 3, strides=2, padding="same", activation="gelu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8 * filters, activation="gelu")(h)
    mean = keras.layers.Dense(code_size, name="code_mean")(h)
    log_var = keras.layers.Dense(code_size, name="code_log_var")(h)
    encoder = keras.Model(inputs, [mean, log_var], name="vae_encoder")

    code = keras.Input((code_size,), name="code")
    g = keras.layers.Dense(8 * filters, activation="gelu")(code)
    g = keras.layers.Dense(reduced * 2 * filters, activation="gelu")(g)
    g = keras.layers.Reshape((reduced, 2 * filters))(g)
    g = keras.layers.Conv1DTranspose(2 * filters, 3, strides=2, padding="same", activation="gelu")(
        g
    )
    g = keras.layers.Conv1DTranspose(filters, 3, strides=2, padding="same", activation="gelu")(g)
    g = keras.layers.Cropping1D((0, reduced * 4 - window))(g)
    out = keras.layers.Conv1D(n_features, 3, padding="same", name="decoded")(g)
    decoder = keras.Model(code, out, name="vae_decoder")
    return encoder, decoder


def build_embedding_lstm(n_steps: int, code_size: int, units: int) -> keras.Model:
    """Two stacked LSTMs and a linear head: embeddings 1..k-1 -> predicted 2..k."""
    codes = keras.Input((n_steps, code_size), name="embeddings")
    h = keras.layers.LSTM(units, return_sequences=True)(codes)
    h = keras.layers.LSTM(units, return_sequences=True)(h)
    out = keras.layers.Dense(code_size, name="next_embedding")(h)
    return keras.Model(codes, out, name="embedding_lstm")


@register
class VAELSTMDetector(KerasDetector):
    """VAE-LSTM detector for univariate or multivariate series.

    Parameters
    ----------
    window
        Length ``l`` of the short windows the VAE embeds (24, 48, 144 or any ``>= 8``).
    n_windows
        Number ``k`` of consecutive windows in one LSTM sequence; a scored instance covers
        ``window * n_windows`` time steps.
    code_size
        Size of the VAE's code.
    filters
        Width of the VAE's convolutions.
    lstm_units
        Units of each of the two LSTM layers.
    sigma
        Standard deviation of the VAE's Gaussian likelihood (weights reconstruction vs KL).
    epochs_vae, epochs_lstm, batch_size, learning_rate_vae, learning_rate_lstm
        Two-stage training schedule.
    lstm_stride
        Step between the training sequences cut for the LSTM (1 uses them all).
    normalise
        Standardise each feature with the training mean and std (stored with the model).
    """

    name: ClassVar[str] = "vae_lstm"
    kinds: ClassVar[tuple[str, ...]] = ("timeseries",)

    @classmethod
    def context_length(cls, params: dict[str, Any], window_seq_len: int) -> int:
        return int(params.get("window", 48)) * int(params.get("n_windows", 12))

    def __init__(
        self,
        window: int = 48,
        n_windows: int = 12,
        code_size: int = 6,
        filters: int = 32,
        lstm_units: int = 64,
        sigma: float = 0.1,
        epochs_vae: int = 20,
        epochs_lstm: int = 20,
        batch_size: int = 32,
        learning_rate_vae: float = 4e-4,
        learning_rate_lstm: float = 2e-4,
        lstm_stride: int = 1,
        normalise: bool = True,
        score_batch_size: int = 64,
        seed: int | None = None,
    ) -> None:
        if n_windows < 2:
            raise InvalidInputError(f"vae_lstm: n_windows must be >= 2; got {n_windows}")
        if window < 8:
            raise InvalidInputError(f"vae_lstm: window must be >= 8; got {window}")
        super().__init__(
            window=window,
            n_windows=n_windows,
            code_size=code_size,
            filters=filters,
            lstm_units=lstm_units,
            sigma=sigma,
            epochs_vae=epochs_vae,
            epochs_lstm=epochs_lstm,
            batch_size=batch_size,
            learning_rate_vae=learning_rate_vae,
            learning_rate_lstm=learning_rate_lstm,
            lstm_stride=lstm_stride,
            normalise=normalise,
            score_batch_size=score_batch_size,
            seed=seed,
        )
        self.encoder: keras.Model | None = None
        self.decoder: keras.Model | None = None
        self.lstm: keras.Model | None = None
        self._score_fn: Any = None

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        t = np.arange(200, dtype=np.float32)[:, None]
        series = np.sin(t / 5) + 0.05 * np.cos(2.3 * t)
        build = lambda: cls(window=8, n_windows=3, epochs_vae=1, epochs_lstm=1, seed=0)  # noqa: E731
        return [ContractCase("native", build, sliding_windows(series, 24, 2))]

    @property
    def seq_len(self) -> int:
        """Time steps in one scored sequence: ``window * n_windows``."""
        return int(self.params["window"] * self.params["n_windows"])

    # ---- input ------------------------------------------------------------------------
    def _sequences(self, X: np.ndarray, stride: int = 1) -> np.ndarray:
        """Accept sequences (batch, window*n_windows, F) or a long series (T, F) / (T,)."""
        array = np.asarray(X, dtype=np.float32)
        n_features = self.input_shape[1] if self.input_shape else None
        if array.ndim in (1, 2):
            array = sliding_windows(as_series(array, n_features), self.seq_len, stride)
        if array.ndim != 3:
            raise InvalidInputError(
                "vae_lstm: expected sequences (batch, window*n_windows, n_features) or a "
                f"series (T, n_features); got shape {array.shape}"
            )
        expected = self.input_shape or (self.seq_len, array.shape[2])
        return self._check_instances(array, tuple(expected))

    # ---- training ---------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        epochs_vae: int | None = None,
        epochs_lstm: int | None = None,
        progress: ProgressFn = silent,
    ) -> dict[str, Any]:
        """Two-stage training on normal data: the VAE first, then the LSTM on its codes.

        ``X`` is a long series (T, F) or a batch of sequences. Returns the training summary.
        """
        self.progress = progress
        p = self.params
        set_seed(p["seed"])
        array = np.asarray(X, dtype=np.float32)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim == 2:
            series = as_series(array)
            self._fit_normalisation(series, p["normalise"])
            normed = self._normalise(series)
            if len(normed) < self.seq_len:
                raise InvalidInputError(
                    f"vae_lstm: the training series has {len(normed)} steps; one sequence "
                    f"needs window*n_windows = {self.seq_len}"
                )
            vae_windows = sliding_windows(normed, p["window"], 1)
            sequences = sliding_windows(normed, self.seq_len, p["lstm_stride"])
        else:
            sequences_raw = self._sequences(array)
            self._fit_normalisation(sequences_raw, p["normalise"])
            sequences = self._normalise(sequences_raw)
            vae_windows = sequences.reshape(-1, p["window"], sequences.shape[-1])
        n_features = int(sequences.shape[-1])
        self.input_shape = (self.seq_len, n_features)
        started = time.perf_counter()

        self.encoder, self.decoder = build_window_vae(
            p["window"], n_features, p["code_size"], p["filters"]
        )
        vae_history = self._train_vae(np.ascontiguousarray(vae_windows), epochs_vae, progress)

        codes = self._embed(np.ascontiguousarray(sequences))
        self.lstm = build_embedding_lstm(p["n_windows"] - 1, p["code_size"], p["lstm_units"])
        lstm_history = self._train_lstm(codes, epochs_lstm, progress)

        self._compile_scorer()
        self.threshold = None
        self.training = self._training_summary(
            lstm_history,
            started,
            training_windows=len(vae_windows),
            training_sequences=len(sequences),
            vae_final_loss=vae_history[-1] if vae_history else {},
        )
        return self.training

    def _train_vae(
        self, windows: np.ndarray, epochs: int | None, progress: ProgressFn
    ) -> list[dict[str, float]]:
        p = self.params
        encoder, decoder = self.encoder, self.decoder
        assert encoder is not None and decoder is not None
        sample = GaussianSample()
        variables = encoder.trainable_variables + decoder.trainable_variables
        optimizer = keras.optimizers.Adam(p["learning_rate_vae"], clipnorm=1.0)
        inv_two_sigma2 = 1.0 / (2.0 * float(p["sigma"]) ** 2)

        @tf.function
        def step(x: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                mean, log_var = encoder(x, training=True)
                z = sample([mean, log_var], training=True)
                recon = decoder(z, training=True)
                recon_term = tf.reduce_sum(tf.square(x - recon), axis=[1, 2]) * inv_two_sigma2
                kl = 0.5 * tf.reduce_sum(tf.square(mean) + tf.exp(log_var) - 1.0 - log_var, 1)
                loss = tf.reduce_mean(recon_term + kl)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return {"loss": loss, "kl": tf.reduce_mean(kl)}

        return train_epochs(
            step,
            (windows,),
            epochs=epochs or p["epochs_vae"],
            batch_size=p["batch_size"],
            label="vae_lstm VAE",
            progress=progress,
            seed=p["seed"],
            optimizer=optimizer,
            variables=variables,
        )

    def _train_lstm(
        self, codes: np.ndarray, epochs: int | None, progress: ProgressFn
    ) -> list[dict[str, float]]:
        p = self.params
        lstm = self.lstm
        assert lstm is not None
        optimizer = keras.optimizers.Adam(p["learning_rate_lstm"], clipnorm=1.0)

        @tf.function
        def step(inputs: tf.Tensor, targets: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(lstm(inputs, training=True) - targets))
            grads = tape.gradient(loss, lstm.trainable_variables)
            optimizer.apply_gradients(zip(grads, lstm.trainable_variables, strict=True))
            return {"mse": loss}

        return train_epochs(
            step,
            (codes[:, :-1], codes[:, 1:]),
            epochs=epochs or p["epochs_lstm"],
            batch_size=p["batch_size"],
            label="vae_lstm LSTM",
            progress=progress,
            seed=p["seed"],
            optimizer=optimizer,
            variables=lstm.trainable_variables,
        )

    def _embed(self, sequences: np.ndarray) -> np.ndarray:
        """VAE code means of each window of each sequence: (batch, n_windows, code_size)."""
        p = self.params
        assert self.encoder is not None
        windows = sequences.reshape(-1, p["window"], sequences.shape[-1])
        means = []
        for start in range(0, len(windows), 8192):
            mean, _ = self.encoder(windows[start : start + 8192], training=False)
            means.append(np.asarray(mean))
        return np.concatenate(means).reshape(len(sequences), p["n_windows"], p["code_size"])

    # ---- inference --------------------------------------------------------------------
    def _compile_scorer(self) -> None:
        p = self.params
        encoder, decoder, lstm = self.encoder, self.decoder, self.lstm
        window, k, code = p["window"], p["n_windows"], p["code_size"]
        n_features = (self.input_shape or (0, 0))[1]

        def errors(x: tf.Tensor) -> tf.Tensor:
            batch = tf.shape(x)[0]
            windows = tf.reshape(x, [batch * k, window, n_features])
            mean, _ = encoder(windows, training=False)
            codes = tf.reshape(mean, [batch, k, code])
            predicted = lstm(codes[:, :-1], training=False)
            decoded = decoder(tf.reshape(predicted, [batch * (k - 1), code]), training=False)
            decoded = tf.reshape(decoded, [batch, (k - 1) * window, n_features])
            return tf.square(decoded - x[:, window:])

        self._score_fn = tf.function(
            errors,
            input_signature=[tf.TensorSpec([None, k * window, n_features], tf.float32)],
        )

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """Squared errors of the predicted windows (batch, (k-1)*window, F) and their sums.

        A long series gives one instance per sequence start (stride 1); the instance
        score of a sequence belongs to its last time step in streaming use.
        """
        self._require_fitted("score()")
        data = self._normalise(self._sequences(X))
        (feature_score,) = score_at_verified_shapes(
            self._score_fn, data, self._score_shape, batch_size
        )
        return Scores(feature_score.sum(axis=(1, 2)), feature_score)

    def expected(self, X: np.ndarray) -> np.ndarray:
        """Each sequence as the model predicted it, in its units: the windows after the first
        decoded from the LSTM's predicted codes; the first window, which nothing predicts,
        is NaN."""
        self._require_fitted("expected()")
        assert self.decoder is not None and self.lstm is not None
        p = self.params
        sequences = self._normalise(self._sequences(X))
        codes = self._embed(sequences)
        predicted = np.asarray(self.lstm(codes[:, :-1], training=False))
        decoded = np.asarray(
            self.decoder(predicted.reshape(-1, p["code_size"]), training=False)
        ).reshape(len(sequences), -1, sequences.shape[-1])
        first = np.full((len(sequences), p["window"], sequences.shape[-1]), np.nan)
        assert self.mean is not None and self.std is not None
        return np.concatenate([first, decoded * self.std + self.mean], axis=1)

    # ---- persistence hooks ------------------------------------------------------------
    def _model_files(self) -> dict[str, keras.Model]:
        assert self.encoder is not None and self.decoder is not None and self.lstm is not None
        return {
            "vae_encoder.keras": self.encoder,
            "vae_decoder.keras": self.decoder,
            "lstm.keras": self.lstm,
        }

    def _restore(self, models: dict[str, keras.Model]) -> None:
        self.encoder = models["vae_encoder.keras"]
        self.decoder = models["vae_decoder.keras"]
        self.lstm = models["lstm.keras"]
        self._compile_scorer()
