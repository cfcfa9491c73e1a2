"""Image outlier VAE: reconstruction loss of a convolutional VAE as the outlier score.

After the seed project "VAE for anomaly detection (MNIST)": a convolutional encoder with
batch-norm and dropout (the encoder only, so the decoder stays a deterministic function of
the code), latent size 10, trained with KL annealing (beta warmed up from ~0 so the code is
used before it is regularised), cosine learning-rate decay and gradient clipping. The score
is the reconstruction loss (binary cross-entropy for images in [0, 1], or MSE) of the
decoded mean code.

>>> import numpy as np
>>> blobs = np.zeros((64, 8, 8, 1), "float32"); blobs[:, 2:6, 2:6] = 1.0
>>> det = ImageVAEDetector(epochs=1, filters=4, beta=0.0, seed=0)
>>> summary = det.fit(blobs, validation_data=blobs[:16])
>>> sorted(summary["history"][0])
['beta', 'grad_norm', 'kl', 'loss', 'recon', 'val_loss', 'val_recon']
>>> det.infer_threshold(blobs, threshold_perc=99)
>>> det.predict(1.0 - blobs[:2])["data"]["is_outlier"].shape, det.reconstruct(blobs[:2]).shape
((2,), (2, 8, 8, 1))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, silent
from streamdet.detectors.base import ContractCase, Scores, register
from streamdet.detectors.keras_base import (
    KerasDetector,
    keras,
    score_at_verified_shapes,
    set_seed,
    tf,
    train_epochs,
)
from streamdet.detectors.layers import vae_decoder, vae_encoder
from streamdet.detectors.vae_lstm import GaussianSample

Loss = Literal["bce", "mse"]


def image_encoder_net(shape: tuple[int, int, int], filters: int, dropout: float) -> keras.Model:
    """Two strided convolutions (batch-norm, ReLU, dropout), flattened."""
    layers: list[Any] = [keras.Input(shape)]
    for f in (filters, 2 * filters):
        layers += [
            keras.layers.Conv2D(f, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(dropout),
        ]
    return keras.Sequential([*layers, keras.layers.Flatten()])


def image_decoder_net(shape: tuple[int, int, int], latent_dim: int, filters: int) -> keras.Model:
    """Code -> per-pixel logits of an image of ``shape`` (two transposed convolutions)."""
    height, width, channels = shape
    h4, w4 = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(h4 * w4 * 2 * filters, activation="relu"),
            keras.layers.Reshape((h4, w4, 2 * filters)),
            keras.layers.Conv2DTranspose(
                2 * filters, 3, strides=2, padding="same", activation="relu"
            ),
            keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Cropping2D(((0, 4 * h4 - height), (0, 4 * w4 - width))),
            keras.layers.Conv2D(channels, 3, padding="same", name="logits"),
        ]
    )


def build_image_vae(
    shape: tuple[int, int, int], latent_dim: int, filters: int, dropout: float
) -> tuple[keras.Model, keras.Model]:
    """Encoder (image -> mean, log-variance) and decoder (code -> logits)."""
    height, width, _ = shape
    if height < 4 or width < 4:
        raise InvalidInputError(f"image_vae: images must be at least 4x4; got {shape}")
    encoder = vae_encoder(shape, latent_dim, image_encoder_net(shape, filters, dropout), "image")
    decoder = vae_decoder(latent_dim, shape, image_decoder_net(shape, latent_dim, filters), "image")
    return encoder, decoder


@register
class ImageVAEDetector(KerasDetector):
    """Convolutional VAE outlier detector for images of shape (H, W, C) with values in [0, 1].

    Parameters
    ----------
    latent_dim
        Size of the code (10 as in the seed project).
    filters
        Channels of the first convolution (the second has twice as many).
    dropout
        Dropout rate in the encoder.
    loss
        Training reconstruction loss: ``bce`` (images in [0, 1]) or ``mse``.
    score_loss
        The reconstruction loss used as the outlier score (default: ``loss``). MSE bounds each
        pixel's contribution, where BCE lets a few uncertain stroke-edge pixels dominate.
    epochs, batch_size, learning_rate
        Training schedule; the learning rate follows a cosine decay to 0 over all steps.
    beta
        Weight of the KL term once annealing is over (the seed project found small values,
        down to 0, essential for sharp reconstructions).
    kl_warmup_epochs
        Epochs over which the KL weight rises linearly to ``beta`` (``beta /
        kl_warmup_epochs`` in the first epoch); 0 or 1: ``beta`` from the start.
    clipnorm
        Gradient clipping norm.
    """

    name: ClassVar[str] = "image_vae"
    kinds: ClassVar[tuple[str, ...]] = ("image",)
    data_type: ClassVar[str] = "image"

    def __init__(
        self,
        latent_dim: int = 10,
        filters: int = 32,
        dropout: float = 0.2,
        loss: Loss = "bce",
        score_loss: Loss | None = None,
        epochs: int = 10,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        kl_warmup_epochs: int = 5,
        clipnorm: float = 1.0,
        score_batch_size: int = 64,
        seed: int | None = None,
        beta: float = 1.0,
    ) -> None:
        if beta < 0:
            raise InvalidInputError(f"image_vae: beta must be >= 0; got {beta}")
        if loss not in ("bce", "mse") or score_loss not in (None, "bce", "mse"):
            raise InvalidInputError(
                f"loss and score_loss must be 'bce' or 'mse'; got {loss!r}, {score_loss!r}"
            )
        super().__init__(
            latent_dim=latent_dim,
            filters=filters,
            dropout=dropout,
            loss=loss,
            score_loss=score_loss,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            kl_warmup_epochs=kl_warmup_epochs,
            clipnorm=clipnorm,
            score_batch_size=score_batch_size,
            seed=seed,
            beta=beta,
        )
        self.encoder: keras.Model | None = None
        self.decoder: keras.Model | None = None
        self._loss_fn: Any = None

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        images = np.random.default_rng(3).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
        build = lambda: cls(epochs=1, filters=4, latent_dim=4, batch_size=32, seed=0)  # noqa: E731
        return [ContractCase("native", build, images)]

    def _images(self, X: np.ndarray) -> np.ndarray:
        array = np.asarray(X, dtype=np.float32)
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4:
            raise InvalidInputError(
                f"image_vae: expected images (n, height, width, channels); got shape {array.shape}"
            )
        expected = self.input_shape or array.shape[1:]
        array = self._check_instances(array, tuple(expected))
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise InvalidInputError(
                f"image_vae: pixel values must be scaled to [0, 1]; got [{low:g}, {high:g}] "
                "(divide 8-bit images by 255)"
            )
        return array

    def _pixel_loss(
        self, images: tf.Tensor, logits: tf.Tensor, loss: str | None = None
    ) -> tf.Tensor:
        if (loss or self.params["loss"]) == "bce":
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
        return tf.square(images - tf.sigmoid(logits))

    def fit(
        self,
        X: np.ndarray,
        epochs: int | None = None,
        progress: ProgressFn = silent,
        *,
        validation_data: np.ndarray | None = None,
        on_epoch_end: Callable[[int, ImageVAEDetector], None] | None = None,
    ) -> dict[str, Any]:
        """Train on normal images (values in [0, 1]).

        The returned summary's ``history`` has one entry per epoch: mean training ``loss``,
        ``recon`` and ``kl``, the KL weight ``beta`` used, the mean gradient norm
        ``grad_norm`` (before clipping) and, with ``validation_data``, ``val_loss`` and
        ``val_recon`` (mean code, no dropout). ``on_epoch_end(epoch, detector)`` is called
        after each epoch (1-based), e.g. to draw reconstructions as training goes.
        """
        self.progress = progress
        p = self.params
        set_seed(p["seed"])
        images = self._images(X)
        validation = None if validation_data is None else self._images(validation_data)
        self.input_shape = tuple(int(d) for d in images.shape[1:])
        channels = images.shape[-1]
        self.mean = np.zeros(channels, np.float32)
        self.std = np.ones(channels, np.float32)
        self.encoder, self.decoder = build_image_vae(
            self.input_shape,
            p["latent_dim"],
            p["filters"],
            p["dropout"],  # type: ignore[arg-type]
        )
        encoder, decoder = self.encoder, self.decoder
        n_epochs = epochs or p["epochs"]
        steps = n_epochs * math.ceil(len(images) / p["batch_size"])
        schedule = keras.optimizers.schedules.CosineDecay(p["learning_rate"], max(steps, 1))
        optimizer = keras.optimizers.Adam(schedule, clipnorm=p["clipnorm"])
        variables = encoder.trainable_variables + decoder.trainable_variables
        sample = GaussianSample()
        beta = tf.Variable(0.0, trainable=False)
        pixel_loss = self._pixel_loss

        def losses(x: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
            mean, log_var = encoder(x, training=training)
            z = sample([mean, log_var], training=True) if training else mean
            recon = tf.reduce_mean(
                tf.reduce_sum(pixel_loss(x, decoder(z, training=training)), axis=[1, 2, 3])
            )
            kl = tf.reduce_mean(
                -0.5 * tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
            )
            return recon, kl

        @tf.function
        def step(x: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                recon, kl = losses(x, True)
                loss = recon + beta * kl
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return {
                "loss": loss,
                "recon": recon,
                "kl": kl,
                "beta": beta + 0.0,
                "grad_norm": tf.linalg.global_norm(grads),
            }

        @tf.function
        def evaluate(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            recon, kl = losses(x, False)
            return recon + beta * kl, recon

        warmup = max(int(p["kl_warmup_epochs"]), 1)
        started = time.perf_counter()
        history: list[dict[str, float]] = []
        for epoch in range(n_epochs):
            # KL annealing: the weight grows linearly over the warm-up epochs to beta.
            beta.assign(float(p["beta"]) * min(1.0, (epoch + 1) / warmup))
            history += train_epochs(
                step,
                (images,),
                epochs=1,
                batch_size=p["batch_size"],
                label="image_vae",
                progress=progress,
                seed=p["seed"],
                first_epoch=epoch + 1,
                total_epochs=n_epochs,
                optimizer=optimizer,
                variables=variables,
            )
            if validation is not None:
                totals = np.zeros(2)
                for start in range(0, len(validation), p["batch_size"]):
                    chunk = validation[start : start + p["batch_size"]]
                    totals += len(chunk) * np.array([float(v) for v in evaluate(chunk)])
                history[-1]["val_loss"], history[-1]["val_recon"] = totals / len(validation)
                progress(
                    f"image_vae epoch {epoch + 1}/{n_epochs} val_loss={history[-1]['val_loss']:.5g}"
                )
            if on_epoch_end is not None:
                self._compile_loss()
                on_epoch_end(epoch + 1, self)
        self._compile_loss()
        self.threshold = None
        self.training = self._training_summary(
            history, started, training_images=len(images), epochs=n_epochs
        )
        self.training["history"] = history
        return self.training

    def expected(self, X: np.ndarray) -> np.ndarray:
        """The reconstruction (:meth:`reconstruct`), in the images' shape."""
        return self.reconstruct(X).reshape(np.shape(X))

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        """The decoded mean code of each image (values in [0, 1])."""
        self._require_fitted("reconstruct()")
        encoder, decoder = self.encoder, self.decoder
        assert encoder is not None and decoder is not None
        images = self._images(X)
        size = int(self.params["score_batch_size"])
        parts = []
        for start in range(0, len(images), size):
            mean, _ = encoder(images[start : start + size], training=False)
            parts.append(tf.sigmoid(decoder(mean, training=False)).numpy())
        return np.concatenate(parts)

    def _compile_loss(self) -> None:
        encoder, decoder = self.encoder, self.decoder
        assert encoder is not None and decoder is not None
        pixel_loss = self._pixel_loss
        score_loss = self.params.get("score_loss") or self.params["loss"]

        def losses(x: tf.Tensor) -> tf.Tensor:
            mean, _ = encoder(x, training=False)
            return pixel_loss(x, decoder(mean, training=False), score_loss)

        self._loss_fn = tf.function(
            losses, input_signature=[tf.TensorSpec([None, *self.input_shape], tf.float32)]
        )

    def set_score_loss(self, loss: Loss) -> None:
        """Score with another reconstruction loss from now on (no retraining needed)."""
        if loss not in ("bce", "mse"):
            raise InvalidInputError(f"score_loss must be 'bce' or 'mse'; got {loss!r}")
        self.params["score_loss"] = loss
        if self.fitted:
            self._compile_loss()

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """Per-pixel loss (n, H, W, C) and its sum per image."""
        self._require_fitted("score()")
        images = self._images(X)
        (pixels,) = score_at_verified_shapes(self._loss_fn, images, self._score_shape, batch_size)
        return Scores(pixels.sum(axis=(1, 2, 3)), pixels)

    def _model_files(self) -> dict[str, keras.Model]:
        assert self.encoder is not None and self.decoder is not None
        return {"encoder.keras": self.encoder, "decoder.keras": self.decoder}

    def _restore(self, models: dict[str, keras.Model]) -> None:
        self.encoder = models["encoder.keras"]
        self.decoder = models["decoder.keras"]
        self._compile_loss()
