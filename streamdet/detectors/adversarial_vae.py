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
>>> det = AdversarialVAE(model=clf, latent_dim=1, samples=1, beta=0.01, seed=1)
>>> summary = det.fit(clean, w_recon=0.01, cov_elbo=dict(sim=0.1), epochs=1, verbose=False)
>>> det.infer_threshold(clean, threshold_perc=99)
>>> attacked = np.array([[1.0, 1.0], [1.0, -2.0]], "float32")  # x0 pushed off x0 = x1
>>> sorted(det.correct(attacked)["data"])
['corrected', 'instance_score', 'is_adversarial', 'predicted', 'reconstructed']
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from streamdet.core.errors import InvalidInputError, ModelLoadError
from streamdet.core.progress import ProgressFn
from streamdet.detectors.base import ContractCase, Scores, register
from streamdet.detectors.image_vae import image_decoder_net, image_encoder_net
from streamdet.detectors.keras_base import (
    KerasDetector,
    call_loss,
    check_log_metric,
    fit_progress,
    keras,
    resolve_optimizer,
    score_at_verified_shapes,
    set_seed,
    shared_draw_noise,
    tf,
    train_epochs,
)
from streamdet.detectors.layers import (
    check_network,
    dense_stack,
    part,
    portable,
    vae_decoder,
    vae_encoder,
)
from streamdet.detectors.vaegmm import ElboCov, elbo_precision, elbo_settings

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

    Takes alibi-detect's ``AdversarialVAE`` arguments (``AdversarialVAE`` is this class), with
    the defaults of its documentation page.

    Parameters
    ----------
    threshold
        KL divergence above which an instance is adversarial (``infer_threshold`` sets it).
    vae
        A ready VAE: another detector's ``.vae`` (its encoder and decoder are reused and
        trained further by ``fit``).
    model
        The classifier (Keras model) to guard. It is frozen and saved with the detector.
    encoder_net, decoder_net
        Keras networks: instance -> features (two linear heads give the code's mean and
        log-variance), code -> reconstruction (on the instance's scale: a sigmoid output for
        images in [0, 1]). Default: a small CNN for images, tanh MLPs for rows.
    latent_dim
        Size of the VAE's code (default 32).
    samples
        Latent draws averaged at prediction.
    beta
        Weight of the latent KL term.
    data_type
        Recorded in the prediction's ``meta`` (default ``image`` or ``tabular``).

    Keyword-only (streamdet; ``fit`` may override the loss weights and ``cov_elbo``):

    classifier
        Path of a ``.keras`` classifier (loaded with ``safe_mode``), instead of ``model``.
    classifier_logits
        True when the classifier outputs logits rather than probabilities.
    temperature
        Temperature applied to the classifier's prediction on the input (> 1 softens it,
        so the VAE is also taught the classifier's ranking of the other classes).
    filters, dropout
        Default image VAE: channels of the first convolution, encoder dropout.
    encoder_units, decoder_units
        Default row VAE: hidden widths of the MLPs.
    recon_loss, elbo_cov, sigma
        ELBO reconstruction term: ``bce`` (images in [0, 1]) or ``mse``, a Gaussian whose
        covariance is ``fixed`` (scale ``sigma``: alibi's ``cov_elbo=dict(sim=sigma)``),
        ``features`` (each element's training variance) or ``full``. Default: ``bce`` for
        images, ``mse`` for rows.
    w_model, w_recon
        Loss weights of the prediction KL and the reconstruction term.
    input_noise
        Train as a denoiser: the encoder sees each training instance with ±a added to every
        element (a uniform in [0, input_noise] per instance; clipped to [0, 1] for images,
        in standard units for rows), while the targets stay the clean instance and the
        classifier's prediction on it. This teaches the VAE to undo large perturbations
        (FGSM, PGD) instead of reproducing them. 0: train on clean inputs only.
    epochs, batch_size, learning_rate, lr_schedule
        Default training schedule: Adam at ``learning_rate``, constant or with a cosine
        decay to 0 over all steps.
    feature_names
        Column names for rows (the daemon maps JSON fields by them).
    """

    name: ClassVar[str] = "adversarial_vae"
    kinds: ClassVar[tuple[str, ...]] = ("tabular", "image")
    data_type: ClassVar[str] = "image"
    outcome_key: ClassVar[str] = "is_adversarial"
    # Settings of the MNIST adversarial benchmark (docs/BENCHMARKS.md): a small
    # reconstruction and KL term keep the code informative; one draw halves scoring time.
    tuned_params: ClassVar[dict[str, Any]] = {
        "w_recon": 0.01,
        "beta": 0.01,
        "sigma": 0.1,
        "samples": 1,
        "epochs": 10,
        "batch_size": 128,
        "lr_schedule": "cosine",
    }

    def __init__(
        self,
        threshold: float | None = None,
        vae: keras.Model | None = None,
        model: keras.Model | None = None,
        encoder_net: keras.Model | None = None,
        decoder_net: keras.Model | None = None,
        latent_dim: int | None = None,
        samples: int = 10,
        beta: float = 0.0,
        data_type: str | None = None,
        *,
        classifier: str | keras.Model | None = None,
        classifier_logits: bool = False,
        temperature: float = 1.0,
        filters: int = 32,
        dropout: float = 0.0,
        encoder_units: tuple[int, ...] | list[int] = (64, 32),
        decoder_units: tuple[int, ...] | list[int] = (32, 64),
        recon_loss: ReconLoss | None = None,
        elbo_cov: ElboCov = "fixed",
        sigma: float = 0.05,
        w_model: float = 1.0,
        w_recon: float = 0.0,
        input_noise: float = 0.0,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        feature_names: list[str] | None = None,
        score_batch_size: int = 64,
        seed: int | None = None,
    ) -> None:
        if recon_loss not in (None, "bce", "mse"):
            raise InvalidInputError(f"recon_loss must be 'bce' or 'mse'; got {recon_loss!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise InvalidInputError(
                f"lr_schedule must be 'constant' or 'cosine'; got {lr_schedule!r}"
            )
        if temperature <= 0:
            raise InvalidInputError(f"temperature must be > 0; got {temperature}")
        if samples < 1:
            raise InvalidInputError(f"samples must be >= 1; got {samples}")
        if input_noise < 0:
            raise InvalidInputError(f"input_noise must be >= 0; got {input_noise}")
        if model is not None and classifier is not None:
            raise InvalidInputError(
                "adversarial_vae: give the classifier as model or as classifier (a path), not both"
            )
        check_network(encoder_net, "encoder_net")
        check_network(decoder_net, "decoder_net")
        self.classifier: keras.Model | None = None
        if isinstance(classifier, keras.Model):
            model, classifier = classifier, None
        if model is not None:
            if not isinstance(model, keras.Model):
                raise InvalidInputError(
                    f"adversarial_vae: model must be a Keras classifier; got {type(model).__name__}"
                )
            self.classifier = portable(model)
            self.classifier.trainable = False
        self.encoder: keras.Model | None = None
        self.decoder: keras.Model | None = None
        if vae is not None:
            self.encoder = part(vae, "adversarial_vae_encoder", "vae")
            self.decoder = part(vae, "adversarial_vae_decoder", "vae")
            latent_dim = int(self.encoder.outputs[0].shape[-1])
        super().__init__(
            latent_dim=int(latent_dim or 32),
            samples=samples,
            beta=beta,
            data_type=data_type,
            classifier=None if classifier is None else str(classifier),
            classifier_logits=classifier_logits,
            temperature=temperature,
            filters=filters,
            dropout=dropout,
            encoder_units=list(encoder_units),
            decoder_units=list(decoder_units),
            recon_loss=recon_loss,
            elbo_cov=elbo_cov,
            sigma=sigma,
            w_model=w_model,
            w_recon=w_recon,
            input_noise=input_noise,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            lr_schedule=lr_schedule,
            feature_names=feature_names,
            score_batch_size=score_batch_size,
            seed=seed,
        )
        self._set_threshold(threshold)
        self._nets = (encoder_net, decoder_net)
        self._score_fn: Any = None

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        rng = np.random.default_rng(0)
        a = rng.normal(size=(200, 1))
        rows = np.hstack([a, a, -a, 0.5 * a]) + 0.05 * rng.normal(size=(200, 4))
        images = rng.uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)

        def classifier(shape: tuple[int, ...]) -> keras.Model:
            inputs = keras.Input(shape)
            flat = keras.layers.Flatten()(inputs)
            outputs = keras.layers.Dense(3, activation=tf.nn.softmax)(flat)
            model = keras.Model(inputs, outputs)
            kernel = np.random.default_rng(1).normal(size=(int(np.prod(shape)), 3))
            model.layers[-1].set_weights([kernel.astype(np.float32), np.zeros(3, np.float32)])
            return model

        def alibi_way() -> AdversarialVAEDetector:
            relu = tf.nn.relu
            encoder_net = keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    keras.layers.Conv2D(4, 4, strides=2, padding="same", activation=relu),
                    keras.layers.Conv2D(8, 4, strides=2, padding="same", activation=relu),
                ]
            )
            decoder_net = keras.Sequential(
                [
                    keras.Input((4,)),
                    keras.layers.Dense(2 * 2 * 8),
                    keras.layers.Reshape(target_shape=(2, 2, 8)),
                    keras.layers.Conv2DTranspose(8, 4, strides=2, padding="same", activation=relu),
                    keras.layers.Conv2DTranspose(
                        1, 4, strides=2, padding="same", activation="sigmoid"
                    ),
                ]
            )
            return cls(
                threshold=0.1,
                encoder_net=encoder_net,
                decoder_net=decoder_net,
                model=classifier((8, 8, 1)),
                latent_dim=4,
                samples=2,
                epochs=1,
                seed=0,
            )

        native = lambda: cls.tuned(model=classifier((4,)), epochs=1, samples=3, seed=0)  # noqa: E731

        def topic_params(folder: Path) -> dict[str, Any]:
            path = folder / "classifier.keras"
            portable(classifier((4,))).save(path)
            return {"classifier": str(path), "epochs": 1, "samples": 3, "seed": 0}

        return [
            ContractCase("native", native, rows.astype(np.float32), topic_params),
            ContractCase("alibi", alibi_way, images, configurable=False),
        ]

    @property
    def vae(self) -> keras.Model | None:
        """The VAE, instance -> reconstruction of the mean code; pass it as ``vae=`` to reuse
        its networks."""
        if self.encoder is None or self.decoder is None:
            return None
        x = keras.Input(self.encoder.inputs[0].shape[1:])
        mean, _ = self.encoder(x)
        return keras.Model(x, self.decoder(mean), name="vae")

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
                    "adversarial_vae: no classifier; pass model=<Keras classifier> (or set "
                    "params.classifier to the path of a .keras model)"
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
        if self.encoder is not None:
            return  # a fitted detector, or networks from ``vae=``: train them further
        encoder_net, decoder_net = self._nets
        shape = self.input_shape
        if self.images:
            if encoder_net is None:
                encoder_net = image_encoder_net(shape, p["filters"], p["dropout"])  # type: ignore[arg-type]
            if decoder_net is None:
                decoder_net = keras.Sequential(
                    [
                        image_decoder_net(shape, p["latent_dim"], p["filters"]),  # type: ignore[arg-type]
                        keras.layers.Activation("sigmoid"),
                    ]
                )
        else:
            encoder_net = encoder_net or dense_stack(p["encoder_units"])
            decoder_net = decoder_net or dense_stack(p["decoder_units"], output=shape[0])
        self.encoder = vae_encoder(shape, p["latent_dim"], encoder_net, "adversarial_vae")
        self.decoder = vae_decoder(p["latent_dim"], shape, decoder_net, "adversarial_vae")

    def _decode(self, z: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Decoder output (standardised values for rows) and x' on the input's scale."""
        assert self.decoder is not None and self.mean is not None and self.std is not None
        out = self.decoder(z, training=training)
        if self.images:
            return out, out
        return out, out * self.std + self.mean

    def _recon_term(self, x: tf.Tensor, out: tf.Tensor, precision: tf.Tensor) -> tf.Tensor:
        """Per-instance ELBO reconstruction term of the decoder output ``out`` against the
        encoder's input ``x`` (standardised rows): BCE, or the Gaussian ½ dᵀ P d."""
        if self._recon_loss == "bce":
            p = tf.clip_by_value(out, EPS, 1.0 - EPS)
            bce = -(x * tf.math.log(p) + (1.0 - x) * tf.math.log(1.0 - p))
            return tf.reduce_sum(bce, axis=list(range(1, len(x.shape))))
        diff = tf.reshape(x - out, [tf.shape(x)[0], -1])
        return 0.5 * tf.einsum("nd,de,ne->n", diff, precision, diff)

    @property
    def _recon_loss(self) -> str:
        return self.params["recon_loss"] or ("bce" if self.images else "mse")

    # ---- training ---------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        loss_fn: Any = None,
        w_model: float | None = None,
        w_recon: float | None = None,
        optimizer: Any = None,
        cov_elbo: dict[str, Any] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
        log_metric: tuple[str, Any] | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Train the VAE on clean instances against the frozen classifier.

        Arguments left None take the constructor's values; those given are recorded in
        ``params``. ``cov_elbo`` (``dict(sim=0.05)``, ``dict(cov_diag=None)`` or
        ``dict(cov_full=None)``) sets the covariance of the Gaussian reconstruction term
        (``recon_loss='mse'``, the default for rows). ``loss_fn`` replaces
        ``w_model`` · KL(M(x) ‖ M(x')) + ``w_recon`` · reconstruction; it is called as
        ``loss_fn(x, x_recon, ...)`` with those of ``model``, ``w_model``, ``w_recon`` and
        ``sim`` its signature names; ``beta`` times the latent KL is added.
        """
        for key, value in (("w_model", w_model), ("w_recon", w_recon)):
            if value is not None:
                self.params[key] = float(value)
        if cov_elbo is not None:
            self.params.update(elbo_settings(cov_elbo))
        p = self.params
        progress = self.progress = fit_progress(verbose, progress)
        metric = check_log_metric(log_metric)
        set_seed(p["seed"])
        classifier = self._classifier()
        data = self._instances(X)
        if self.input_shape is None:
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
        flat = encoded.reshape(len(encoded), -1)
        precision = tf.constant(elbo_precision(flat, p["elbo_cov"], p["sigma"]))
        n_epochs = epochs or p["epochs"]
        size = batch_size or p["batch_size"]
        if optimizer is None and p["lr_schedule"] == "cosine":
            steps = n_epochs * math.ceil(len(data) / size)
            schedule = keras.optimizers.schedules.CosineDecay(p["learning_rate"], max(steps, 1))
            optimizer = keras.optimizers.Adam(schedule, clipnorm=1.0)
        optimizer = resolve_optimizer(optimizer, p["learning_rate"])
        variables = encoder.trainable_variables + self.decoder.trainable_variables
        w_model_, w_recon_, beta = float(p["w_model"]), float(p["w_recon"]), float(p["beta"])
        temperature = float(p["temperature"])
        sim = float(p["sigma"])

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
                kl = -0.5 * tf.reduce_mean(
                    tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
                )
                if loss_fn is None:
                    model_kl = tf.reduce_mean(prediction_kl(target, self._probabilities(x_hat)))
                    recon = tf.reduce_mean(self._recon_term(x_in, out, precision))
                    main = w_model_ * model_kl + w_recon_ * recon
                    parts = {"model_kl": model_kl, "recon": recon}
                else:
                    main = call_loss(
                        loss_fn,
                        x,
                        x_hat,
                        model=classifier,
                        w_model=w_model_,
                        w_recon=w_recon_,
                        sim=sim,
                    )
                    parts = {}
                loss = main + beta * kl
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            if metric is not None:
                metric[1].update_state(x, x_hat)
            return {"loss": loss, **parts, "kl": kl}

        started = time.perf_counter()
        history = train_epochs(
            step,
            (data, encoded),
            epochs=n_epochs,
            batch_size=size,
            label="adversarial_vae",
            progress=progress,
            seed=p["seed"],
            log_metric=metric,
            optimizer=optimizer,
            variables=variables,
        )
        self._compile_score()
        self.training = self._training_summary(
            history, started, training_instances=len(data), epochs=n_epochs, classes=int(classes)
        )
        self.training["history"] = history
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

    def _run(self, X: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, ...]:
        self._require_fitted("score()")
        data = self._instances(X)
        return score_at_verified_shapes(self._score_fn, data, self._score_shape, batch_size)

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """KL(M(x) ‖ M(x')) per instance, and (x - x')² per element."""
        kl, squared, _, _ = self._run(X, batch_size)
        return Scores(kl, squared)

    def correct(self, X: np.ndarray, batch_size: int | None = None) -> dict[str, dict[str, Any]]:
        """Class of each instance: predicted on the reconstruction where flagged, else on x.

        ``data`` holds ``corrected`` (the classes to use), ``predicted`` (the classifier's
        class on the input), ``reconstructed`` (its class on the reconstruction),
        ``is_adversarial`` and ``instance_score``.
        """
        kl, _, p, q = self._run(X, batch_size)
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
        kind = self.params.get("data_type") or ("image" if self.images else "tabular")
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


AdversarialVAE = AdversarialVAEDetector
