"""Adversarial VAE: flag inputs whose classifier prediction the VAE cannot reproduce.

After Vacanti & Van Looveren, "Adversarial detection and correction by matching prediction
distributions" (2020), with a VAE. A frozen classifier M is given. The VAE is trained on clean
data so that M's prediction on the reconstruction x' matches its prediction on x:

    loss = w_model · KL(M(x) ‖ M(x')) + w_recon · ELBO reconstruction + beta · KL(latent)

An adversarial perturbation is, by construction, off the clean-data manifold: the VAE does
not reproduce it, so M(x') falls back to the class the image really shows and the KL
between the two predictions is large. That KL, averaged over ``samples`` draws of the code,
is the score. :meth:`AdversarialVAEDetector.correct` returns the class predicted on the
reconstruction for flagged inputs, which undoes the attack.

Images (n, H, W, C) in [0, 1] use a convolutional VAE; rows (n, F) an MLP VAE on
standardised features, whose reconstruction is put back on the input's scale before the
classifier sees it.

>>> import numpy as np, keras
>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(1024, 1))
>>> clean = (np.hstack([a, a]) + 0.05 * rng.normal(size=(1024, 2))).astype("float32")
>>> clf = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
>>> clf.layers[0].set_weights([np.array([[4.0, -4.0], [0.0, 0.0]]), np.zeros(2)])
>>> det = AdversarialVAEDetector(classifier=clf, latent_dim=1, epochs=30, seed=0)
>>> summary = det.fit(clean)
>>> det.infer_threshold(clean, threshold_perc=99)
>>> attacked = np.array([[1.0, 1.0], [1.0, -2.0]], "float32")  # x0 pushed off x0 = x1
>>> out = det.correct(attacked)["data"]
>>> out["is_adversarial"].tolist(), out["predicted"].tolist(), out["corrected"].tolist()
([0, 1], [0, 0], [0, 1])
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from streamdet.detectors.base import (
    KerasDetector,
    Scores,
    keras,
    register,
    score_in_fixed_batches,
    set_seed,
    shared_draw_noise,
    tf,
    train_epochs,
)
from streamdet.detectors.image_vae import build_image_vae
from streamdet.detectors.vaegmm import build_dense_vae
from streamdet.errors import InvalidInputError, ModelLoadError
from streamdet.progress import ProgressFn, silent

ReconLoss = Literal["bce", "mse"]
CLASSIFIER_FILE = "classifier.keras"
EPS = 1e-7


def load_classifier(path: str | Path) -> keras.Model:
    """A Keras classifier from ``path`` (``safe_mode``), frozen."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"adversarial_vae: classifier {file} does not exist")
    try:
        model = keras.saving.load_model(file, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ModelLoadError(
            f"adversarial_vae: classifier {file} could not be loaded: {exc}"
        ) from exc
    model.trainable = False
    return model


def prediction_kl(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """KL(p ‖ q) per row of two batches of class probabilities."""
    p = tf.clip_by_value(p, EPS, 1.0)
    q = tf.clip_by_value(q, EPS, 1.0)
    return tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), axis=-1)


@register
class AdversarialVAEDetector(KerasDetector):
    """Adversarial-input detector and corrector for a frozen Keras classifier.

    Parameters
    ----------
    classifier
        Path of a ``.keras`` classifier (loaded with ``safe_mode`` and frozen), or a Keras
        model. It is saved with the detector, so a saved detector needs no other file.
    classifier_logits
        True when the classifier outputs logits rather than probabilities.
    temperature
        Temperature applied to the classifier's prediction on the input (> 1 softens it,
        so the VAE is also taught the classifier's ranking of the other classes).
    latent_dim
        Size of the VAE's code.
    filters, dropout
        Image VAE only: channels of the first convolution, encoder dropout.
    encoder_units, decoder_units
        Row VAE only: hidden widths of the MLPs.
    recon_loss
        ELBO reconstruction term: ``bce`` (images in [0, 1]) or ``mse`` (Gaussian with scale
        ``sigma``). Default: ``bce`` for images, ``mse`` for rows.
    w_model, w_recon, beta
        Loss weights of the prediction KL, the reconstruction term and the latent KL.
    samples
        Latent draws averaged at prediction (1: the mean code).
    input_noise
        Train as a denoiser: the encoder sees each training instance with ±a added to every
        element (a uniform in [0, input_noise] per instance; clipped to [0, 1] for images,
        in standard units for rows), while the targets stay the clean instance and the
        classifier's prediction on it. This teaches the VAE to undo large perturbations
        (FGSM, PGD) instead of reproducing them. 0: train on clean inputs only.
    feature_names
        Column names for rows (the daemon maps JSON fields by them).
    """

    name: ClassVar[str] = "adversarial_vae"
    kinds: ClassVar[tuple[str, ...]] = ("tabular", "image")
    data_type: ClassVar[str] = "image"
    outcome_key: ClassVar[str] = "is_adversarial"

    def __init__(
        self,
        classifier: str | keras.Model | None = None,
        classifier_logits: bool = False,
        temperature: float = 1.0,
        latent_dim: int = 32,
        filters: int = 32,
        dropout: float = 0.0,
        encoder_units: tuple[int, ...] | list[int] = (64, 32),
        decoder_units: tuple[int, ...] | list[int] = (32, 64),
        recon_loss: ReconLoss | None = None,
        sigma: float = 0.1,
        w_model: float = 1.0,
        w_recon: float = 0.01,
        beta: float = 0.01,
        samples: int = 1,
        input_noise: float = 0.0,
        epochs: int = 10,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        feature_names: list[str] | None = None,
        score_batch_size: int = 64,
        seed: int | None = None,
    ) -> None:
        if recon_loss not in (None, "bce", "mse"):
            raise InvalidInputError(f"recon_loss must be 'bce' or 'mse'; got {recon_loss!r}")
        if temperature <= 0:
            raise InvalidInputError(f"temperature must be > 0; got {temperature}")
        if samples < 1:
            raise InvalidInputError(f"samples must be >= 1; got {samples}")
        if input_noise < 0:
            raise InvalidInputError(f"input_noise must be >= 0; got {input_noise}")
        self.classifier: keras.Model | None = None
        if isinstance(classifier, keras.Model):
            self.classifier = classifier
            self.classifier.trainable = False
            classifier = None
        super().__init__(
            classifier=None if classifier is None else str(classifier),
            classifier_logits=classifier_logits,
            temperature=temperature,
            latent_dim=latent_dim,
            filters=filters,
            dropout=dropout,
            encoder_units=list(encoder_units),
            decoder_units=list(decoder_units),
            recon_loss=recon_loss,
            sigma=sigma,
            w_model=w_model,
            w_recon=w_recon,
            beta=beta,
            samples=samples,
            input_noise=input_noise,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            feature_names=feature_names,
            score_batch_size=score_batch_size,
            seed=seed,
        )
        self.encoder: keras.Model | None = None
        self.decoder: keras.Model | None = None
        self._score_fn: Any = None

    # ---- inputs -----------------------------------------------------------------------
    @property
    def images(self) -> bool:
        return self.input_shape is not None and len(self.input_shape) == 3

    def _instances(self, X: np.ndarray) -> np.ndarray:
        array = np.asarray(X, dtype=np.float32)
        if array.ndim == 3 and (self.input_shape is None or len(self.input_shape) == 3):
            array = array[..., None]  # grey images given without a channel axis
        if array.ndim not in (2, 4):
            raise InvalidInputError(
                "adversarial_vae: expected rows (n, n_features) or images "
                f"(n, height, width, channels); got shape {array.shape}"
            )
        array = self._check_instances(array, tuple(self.input_shape or array.shape[1:]))
        if array.ndim == 4 and (array.min() < 0.0 or array.max() > 1.0):
            raise InvalidInputError(
                f"adversarial_vae: pixel values must be scaled to [0, 1]; got "
                f"[{array.min():g}, {array.max():g}] (divide 8-bit images by 255)"
            )
        return array

    def _classifier(self) -> keras.Model:
        if self.classifier is None:
            if self.params["classifier"] is None:
                raise InvalidInputError(
                    "adversarial_vae: no classifier; set params.classifier to the path of a "
                    ".keras model"
                )
            self.classifier = load_classifier(self.params["classifier"])
        return self.classifier

    def _probabilities(self, x: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
        """The classifier's class probabilities for a batch on the input's scale."""
        assert self.classifier is not None
        out = self.classifier(x, training=False)
        logits = out if self.params["classifier_logits"] else tf.math.log(out + EPS)
        return tf.nn.softmax(logits / temperature, axis=-1)

    # ---- model ------------------------------------------------------------------------
    def _build(self) -> None:
        p = self.params
        assert self.input_shape is not None
        if self.images:
            self.encoder, self.decoder = build_image_vae(
                self.input_shape,  # type: ignore[arg-type]
                p["latent_dim"],
                p["filters"],
                p["dropout"],
            )
        else:
            self.encoder, self.decoder = build_dense_vae(
                self.input_shape[0],
                p["encoder_units"],
                p["decoder_units"],
                p["latent_dim"],
                "adversarial_vae",
            )

    def _decode(self, z: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Decoder output (logits for images, standardised values for rows) and x' on the
        input's scale."""
        assert self.decoder is not None and self.mean is not None and self.std is not None
        out = self.decoder(z, training=training)
        if self.images:
            return out, tf.sigmoid(out)
        return out, out * self.std + self.mean

    def _recon_term(self, x: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
        """Per-instance ELBO reconstruction term of the decoder output ``out`` against the
        encoder's input ``x`` (standardised rows): BCE on logits or scaled squared error."""
        axes = list(range(1, len(x.shape)))
        if self._recon_loss == "bce":
            return tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=out), axis=axes
            )
        fitted = tf.sigmoid(out) if self.images else out
        squared = tf.reduce_sum(tf.square(x - fitted), axis=axes)
        return 0.5 * squared / float(self.params["sigma"]) ** 2

    @property
    def _recon_loss(self) -> str:
        return self.params["recon_loss"] or ("bce" if self.images else "mse")

    # ---- training ---------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, epochs: int | None = None, progress: ProgressFn = silent
    ) -> dict[str, Any]:
        """Train the VAE on clean instances against the frozen classifier."""
        self.progress = progress
        p = self.params
        set_seed(p["seed"])
        classifier = self._classifier()
        data = self._instances(X)
        self.input_shape = tuple(int(d) for d in data.shape[1:])
        if not self.images:
            if p["feature_names"] is not None and len(p["feature_names"]) != data.shape[1]:
                raise InvalidInputError(
                    f"adversarial_vae: {len(p['feature_names'])} feature_names for "
                    f"{data.shape[1]} columns"
                )
            self._fit_normalisation(data, True)
        else:
            self.mean = np.zeros(data.shape[-1], np.float32)
            self.std = np.ones(data.shape[-1], np.float32)
        try:
            classes = classifier(data[:2], training=False).shape[-1]
        except Exception as exc:  # a shape mismatch surfaces as various Keras errors
            raise InvalidInputError(
                f"adversarial_vae: the classifier does not accept instances of shape "
                f"{self.input_shape}: {exc}"
            ) from exc
        self._build()
        encoder = self.encoder
        assert encoder is not None and self.decoder is not None
        encoded = data if self.images else self._normalise(data)
        n_epochs = epochs or p["epochs"]
        steps = n_epochs * math.ceil(len(data) / p["batch_size"])
        schedule = keras.optimizers.schedules.CosineDecay(p["learning_rate"], max(steps, 1))
        optimizer = keras.optimizers.Adam(schedule, clipnorm=1.0)
        variables = encoder.trainable_variables + self.decoder.trainable_variables
        w_model, w_recon, beta = float(p["w_model"]), float(p["w_recon"]), float(p["beta"])
        temperature = float(p["temperature"])

        input_noise = float(p["input_noise"])
        images = self.images

        def perturbed(x_in: tf.Tensor) -> tf.Tensor:
            """x_in plus ±a on every element, a uniform in [0, input_noise] per instance."""
            if input_noise <= 0:
                return x_in
            shape = tf.shape(x_in)
            amplitude = tf.random.uniform(
                tf.concat([shape[:1], tf.ones_like(shape[1:])], axis=0), 0.0, input_noise
            )
            signs = tf.sign(tf.random.uniform(shape, -1.0, 1.0))
            noisy = x_in + amplitude * signs
            return tf.clip_by_value(noisy, 0.0, 1.0) if images else noisy

        @tf.function
        def step(x: tf.Tensor, x_in: tf.Tensor) -> dict[str, tf.Tensor]:
            target = tf.stop_gradient(self._probabilities(x, temperature))
            with tf.GradientTape() as tape:
                mean, log_var = encoder(perturbed(x_in), training=True)
                z = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
                out, x_hat = self._decode(z, training=True)
                model_kl = tf.reduce_mean(prediction_kl(target, self._probabilities(x_hat)))
                recon = tf.reduce_mean(self._recon_term(x_in, out))
                kl = -0.5 * tf.reduce_mean(
                    tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
                )
                loss = w_model * model_kl + w_recon * recon + beta * kl
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return {"loss": loss, "model_kl": model_kl, "recon": recon, "kl": kl}

        started = time.perf_counter()
        history = train_epochs(
            step,
            (data, encoded),
            epochs=n_epochs,
            batch_size=p["batch_size"],
            label="adversarial_vae",
            progress=progress,
            seed=p["seed"],
        )
        self._compile_score()
        self.threshold = None
        self.training = self._training_summary(
            history, started, training_instances=len(data), epochs=n_epochs, classes=int(classes)
        )
        return self.training

    # ---- inference --------------------------------------------------------------------
    def _compile_score(self) -> None:
        encoder = self.encoder
        assert encoder is not None and self.input_shape is not None
        samples = int(self.params["samples"])
        temperature = float(self.params["temperature"])
        images = self.images
        mean_, std_ = tf.constant(self.mean), tf.constant(self.std)

        def score(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
            x_in = x if images else (x - mean_) / std_
            p = self._probabilities(x, temperature)
            mean, log_var = encoder(x_in, training=False)
            kl = tf.zeros([tf.shape(x)[0]], x.dtype)
            q_mean = tf.zeros_like(p)
            squared = tf.zeros_like(x)
            for draw in range(samples):
                z = mean
                if samples > 1:
                    # Fixed-seed noise: the same input always scores the same (replays
                    # after a restart raise the same alerts).
                    noise = shared_draw_noise(mean, draw, 104729)
                    z = mean + tf.exp(0.5 * log_var) * noise
                _, x_hat = self._decode(z)
                q = self._probabilities(x_hat)
                kl += prediction_kl(p, q)
                q_mean += q
                squared += tf.square(x - x_hat)
            return kl / samples, squared / samples, self._probabilities(x), q_mean / samples

        self._score_fn = tf.function(
            score, input_signature=[tf.TensorSpec([None, *self.input_shape], tf.float32)]
        )

    def _run(self, X: np.ndarray) -> tuple[np.ndarray, ...]:
        self._require_fitted("score()")
        data = self._instances(X)
        return score_in_fixed_batches(self._score_fn, data, int(self.params["score_batch_size"]))

    def score(self, X: np.ndarray) -> Scores:
        """KL(M(x) ‖ M(x')) per instance, and (x - x')² per element."""
        kl, squared, _, _ = self._run(X)
        return Scores(kl, squared)

    def correct(self, X: np.ndarray) -> dict[str, dict[str, Any]]:
        """Class of each instance: predicted on the reconstruction where flagged, else on x.

        ``data`` holds ``corrected`` (the classes to use), ``predicted`` (the classifier's
        class on the input), ``reconstructed`` (its class on the reconstruction),
        ``is_adversarial`` and ``instance_score``.
        """
        kl, _, p, q = self._run(X)
        threshold = np.inf if self.threshold is None else float(self.threshold)
        flagged = kl > threshold
        predicted = p.argmax(axis=-1)
        reconstructed = q.argmax(axis=-1)
        return {
            "meta": self._meta(),
            "data": {
                "corrected": np.where(flagged, reconstructed, predicted),
                "predicted": predicted,
                "reconstructed": reconstructed,
                "is_adversarial": flagged.astype(np.int8),
                "instance_score": kl,
            },
        }

    def _meta(self) -> dict[str, Any]:
        kind = "image" if self.images else "tabular"
        return {**super()._meta(), "detector_type": "adversarial", "data_type": kind}

    # ---- persistence hooks ------------------------------------------------------------
    def _model_files(self) -> dict[str, keras.Model]:
        assert self.encoder is not None and self.decoder is not None
        assert self.classifier is not None
        return {
            "encoder.keras": self.encoder,
            "decoder.keras": self.decoder,
            CLASSIFIER_FILE: self.classifier,
        }

    def _restore(self, models: dict[str, keras.Model]) -> None:
        self.encoder = models["encoder.keras"]
        self.decoder = models["decoder.keras"]
        self.classifier = models[CLASSIFIER_FILE]
        self.classifier.trainable = False
        self._compile_score()
