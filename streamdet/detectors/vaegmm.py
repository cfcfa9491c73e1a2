"""VAEGMM detector for tabular data: a VAE plus a Gaussian mixture energy (after DAGMM).

DAGMM (Zong et al., ICLR 2018) scores a row by the energy (negative log density) of a
Gaussian mixture fitted on [latent code, reconstruction features]; here a VAE replaces the
autoencoder. A density net maps each [z, features] to soft memberships of ``n_gmm``
components, from which the mixture's weights, means and covariances follow.

Training loss = w_recon · ELBO reconstruction + w_energy · mean sample energy
+ w_cov_diag · Σ 1/diag(Σ_k) + beta · KL(latent).

After training, the mixture parameters are estimated on the training data in batches (the
sufficient statistics are accumulated, never all rows at once). The instance score is the
sample energy, averaged over ``samples`` draws of the latent code.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(256, 1))
>>> normal = (np.hstack([a, 2 * a, -a]) + 0.01 * rng.normal(size=(256, 3))).astype("float32")
>>> det = OutlierVAEGMM(latent_dim=1, n_gmm=2, samples=2, seed=0)
>>> summary = det.fit(normal, w_recon=1.0, optimizer=keras.optimizers.Adam(1e-3),
...                   cov_elbo=dict(sim=0.1), epochs=1, batch_size=64, verbose=False)
>>> det.infer_threshold(normal, threshold_perc=95)
>>> out = det.predict(np.array([[1.0, 2.0, -1.0], [1.0, -2.0, 1.0]], dtype="float32"))
>>> sorted(out["data"]), out["data"]["is_outlier"].shape, out["meta"]["data_type"]
(['instance_score', 'is_outlier'], (2,), 'tabular')
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

import numpy as np

from streamdet.core.errors import InvalidInputError, ModelLoadError
from streamdet.core.progress import ProgressFn
from streamdet.detectors.base import ContractCase, Scores, register
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
    apply_network,
    check_network,
    dense_stack,
    part,
    vae_decoder,
    vae_encoder,
)

ElboCov = Literal["fixed", "features", "full"]
ScoreTerms = Literal["energy", "energy+reconstruction"]
RECON_FEATURES = ("relative_euclidean", "cosine")
JITTER = 1e-6


def reconstruction_features(x: tf.Tensor, x_hat: tf.Tensor, names: tuple[str, ...]) -> tf.Tensor:
    """[relative Euclidean distance, cosine similarity, ...] between input and reconstruction."""
    columns = []
    x_norm = tf.norm(x, axis=1)
    for name in names:
        if name == "relative_euclidean":
            # +1 in the denominator: standardised rows near the origin would otherwise turn
            # a tiny absolute error into a huge relative one and swamp the mixture.
            columns.append(tf.norm(x - x_hat, axis=1) / (x_norm + 1.0))
        elif name == "cosine":
            dot = tf.reduce_sum(x * x_hat, axis=1)
            columns.append(dot / (x_norm * tf.norm(x_hat, axis=1) + 1e-8))
        else:
            raise InvalidInputError(
                f"unknown reconstruction feature {name!r}; allowed: {', '.join(RECON_FEATURES)}"
            )
    return tf.stack(columns, axis=1)


def gmm_parameters(z: tf.Tensor, gamma: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mixture weights (K,), means (K, D) and covariances (K, D, D) from soft memberships."""
    total = tf.reduce_sum(gamma, axis=0)  # (K,)
    phi = total / tf.cast(tf.shape(z)[0], z.dtype)
    mu = tf.einsum("nk,nd->kd", gamma, z) / total[:, None]
    centred = z[:, None, :] - mu[None]  # (N, K, D)
    cov = tf.einsum("nk,nkd,nke->kde", gamma, centred, centred) / total[:, None, None]
    return phi, mu, cov


def sample_energy(
    z: tf.Tensor, phi: tf.Tensor, mu: tf.Tensor, cov: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Energy -log Σ_k φ_k N(z | μ_k, Σ_k) per row, and Σ_k Σ_d 1/Σ_k[d, d].

    Cholesky factors with jitter keep it finite when a component collapses.
    """
    dims = tf.shape(z)[1]
    eye = tf.eye(dims, dtype=z.dtype)
    chol = tf.linalg.cholesky(cov + JITTER * 10.0 * eye[None])
    centred = z[:, None, :] - mu[None]  # (N, K, D)
    # Solve L y = (z - μ) for each component: y has the Mahalanobis distance as its norm.
    solved = tf.linalg.triangular_solve(chol[None], centred[..., None], lower=True)  # (N, K, D, 1)
    mahalanobis = tf.reduce_sum(tf.square(solved[..., 0]), axis=-1)  # (N, K)
    log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)  # (K,)
    log_norm = 0.5 * (tf.cast(dims, z.dtype) * math.log(2 * math.pi) + log_det)
    log_terms = tf.math.log(phi + 1e-12)[None] - 0.5 * mahalanobis - log_norm[None]
    energy = -tf.reduce_logsumexp(log_terms, axis=1)
    cov_diag = tf.reduce_sum(1.0 / (tf.linalg.diag_part(cov) + JITTER))
    return energy, cov_diag


def _registered_name(fn: Any) -> str | None:
    """The Keras registration name of a callable (so a saved model can find it again), or
    None when it is not registered."""
    name = keras.saving.get_registered_name(fn)
    return name if keras.saving.get_registered_object(name) is fn else None


@register
class VAEGMMDetector(KerasDetector):
    """VAE + GMM energy outlier detector for rows of numeric features.

    Takes alibi-detect's ``OutlierVAEGMM`` arguments (``OutlierVAEGMM`` is this class), with
    the defaults of its documentation page.

    Parameters
    ----------
    threshold
        Sample energy above which a row is an outlier (``infer_threshold`` sets it).
    vaegmm
        A ready model: another detector's ``.vaegmm`` (its encoder, decoder and density net
        are reused and trained further by ``fit``).
    encoder_net, decoder_net, gmm_density_net
        Keras networks: row -> features (two linear heads give the code's mean and
        log-variance), code -> row, and [code, reconstruction features] -> ``n_gmm``
        memberships (softmax). Default: tanh MLPs of ``encoder_units`` / ``decoder_units``
        and one of ``gmm_units`` with dropout.
    n_gmm
        Number of mixture components (default 2).
    latent_dim
        Size of the VAE's code (default 2).
    samples
        Latent draws averaged at prediction.
    beta
        Weight of the latent KL term.
    recon_features
        Features of (x, x') appended to the code: names from ``RECON_FEATURES``, or a
        function ``f(x, x_recon) -> (batch, k)`` (registered with
        ``keras.saving.register_keras_serializable`` so a saved model can find it).
        Default: relative Euclidean distance and cosine similarity.
    data_type
        Recorded in the prediction's ``meta`` (default ``tabular``).

    Keyword-only (streamdet; ``fit`` may override the loss weights and ``cov_elbo``):

    encoder_units, decoder_units, gmm_units
        Widths of the default networks.
    elbo_cov, sigma
        Covariance of the ELBO's Gaussian likelihood: ``fixed`` (scale ``sigma``, alibi's
        ``cov_elbo=dict(sim=sigma)``), ``features`` (each feature's training variance,
        ``dict(cov_diag=None)``) or ``full`` (the covariance of X, ``dict(cov_full=None)``).
    score_terms
        ``energy`` (alibi-detect's score, the default) or ``energy+reconstruction``: the
        sample energy plus the row's squared reconstruction error, each centred and scaled
        by the median and interquartile range of the training rows' values. The energy
        sees rows that fall between the mixture's components; the reconstruction error sees
        rows off the data's manifold, which a low-dimensional code can map close to a
        component (see ``docs/BENCHMARKS.md``, tabular).
    w_recon, w_energy, w_cov_diag
        Loss weights of the ELBO, the mean sample energy and Σ 1/diag(Σ_k).
    epochs, batch_size, learning_rate
        Default training schedule (Adam).
    normalise
        Standardise each feature with the training mean and std (stored with the model).
    feature_names
        Names of the columns, stored with the model (the daemon maps JSON fields by them).
    """

    name: ClassVar[str] = "vaegmm"
    kinds: ClassVar[tuple[str, ...]] = ("tabular",)
    data_type: ClassVar[str] = "tabular"
    # The page's w_recon 1e-7 and learning rate 1e-4 leave the reconstruction untrained in
    # the few epochs a warm-up allows (KDD99 alibi protocol: see docs/BENCHMARKS.md). The
    # energy+reconstruction score was chosen on the ADBench development tables, by AUROC.
    tuned_params: ClassVar[dict[str, Any]] = {
        "score_terms": "energy+reconstruction",
        "w_recon": 1.0,
        "sigma": 0.1,
        "learning_rate": 1e-3,
        "epochs": 30,
        "batch_size": 256,
    }

    def __init__(
        self,
        threshold: float | None = None,
        vaegmm: keras.Model | None = None,
        encoder_net: keras.Model | None = None,
        decoder_net: keras.Model | None = None,
        gmm_density_net: keras.Model | None = None,
        n_gmm: int | None = None,
        latent_dim: int | None = None,
        samples: int = 10,
        beta: float = 1.0,
        recon_features: Any = RECON_FEATURES,
        data_type: str | None = None,
        *,
        encoder_units: tuple[int, ...] | list[int] = (60, 30),
        decoder_units: tuple[int, ...] | list[int] = (30, 60),
        gmm_units: int = 10,
        elbo_cov: ElboCov = "fixed",
        score_terms: ScoreTerms = "energy",
        sigma: float = 0.05,
        w_recon: float = 1e-7,
        w_energy: float = 0.1,
        w_cov_diag: float = 0.005,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-4,
        normalise: bool = True,
        feature_names: list[str] | None = None,
        score_batch_size: int = 256,
        seed: int | None = None,
    ) -> None:
        if elbo_cov not in ("fixed", "features", "full"):
            raise InvalidInputError(
                f"elbo_cov must be 'fixed', 'features' or 'full'; got {elbo_cov!r}"
            )
        if samples < 1:
            raise InvalidInputError(f"vaegmm: samples must be >= 1; got {samples}")
        if score_terms not in ("energy", "energy+reconstruction"):
            raise InvalidInputError(
                "vaegmm: score_terms must be 'energy' or 'energy+reconstruction'; "
                f"got {score_terms!r}"
            )
        self._recon_fn = self._resolve_recon_features(recon_features)
        for net, what in (
            (encoder_net, "encoder_net"),
            (decoder_net, "decoder_net"),
            (gmm_density_net, "gmm_density_net"),
        ):
            check_network(net, what)
        self.encoder: keras.Model | None = None
        self.decoder: keras.Model | None = None
        self.density: keras.Model | None = None
        if vaegmm is not None:
            self.encoder = part(vaegmm, "vaegmm_encoder", "vaegmm")
            self.decoder = part(vaegmm, "vaegmm_decoder", "vaegmm")
            self.density = part(vaegmm, "vaegmm_density", "vaegmm")
            latent_dim = int(self.encoder.outputs[0].shape[-1])
            n_gmm = int(self.density.outputs[0].shape[-1])
        super().__init__(
            n_gmm=int(n_gmm or 2),
            latent_dim=int(latent_dim or 2),
            samples=samples,
            beta=beta,
            recon_features=(
                list(recon_features)
                if isinstance(recon_features, list | tuple)
                else {
                    "registered": _registered_name(recon_features),
                    "function": getattr(recon_features, "__qualname__", repr(recon_features)),
                }
                if self._recon_fn is recon_features
                else recon_features
            ),
            data_type=data_type,
            encoder_units=list(encoder_units),
            decoder_units=list(decoder_units),
            gmm_units=gmm_units,
            elbo_cov=elbo_cov,
            score_terms=score_terms,
            sigma=sigma,
            w_recon=w_recon,
            w_energy=w_energy,
            w_cov_diag=w_cov_diag,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            normalise=normalise,
            feature_names=feature_names,
            score_batch_size=score_batch_size,
            seed=seed,
        )
        self._set_threshold(threshold)
        self._nets = (encoder_net, decoder_net, gmm_density_net)
        self._energy_fn: Any = None

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        rng = np.random.default_rng(0)
        a = rng.normal(size=(200, 1))
        rows = np.hstack([a, 2 * a, -a]) + 0.05 * rng.normal(size=(200, 3))

        def alibi_way() -> VAEGMMDetector:
            def dense(*layers: Any) -> keras.Sequential:
                return keras.Sequential(list(layers))

            tanh = tf.nn.tanh
            return cls(
                threshold=7.5,
                encoder_net=dense(
                    keras.Input((3,)), keras.layers.Dense(8, activation=tanh), keras.layers.Dense(2)
                ),
                decoder_net=dense(
                    keras.Input((2,)), keras.layers.Dense(8, activation=tanh), keras.layers.Dense(3)
                ),
                gmm_density_net=dense(
                    keras.Input((4,)),
                    keras.layers.Dense(4, activation=tanh),
                    keras.layers.Dense(2, activation=tf.nn.softmax),
                ),
                latent_dim=2,
                n_gmm=2,
                samples=3,
                epochs=1,
                seed=0,
            )

        return [
            ContractCase(
                "native", lambda: cls.tuned(epochs=1, samples=3, seed=0), rows.astype(np.float32)
            ),
            ContractCase("alibi", alibi_way, rows.astype(np.float32), configurable=False),
        ]

    @staticmethod
    def _resolve_recon_features(spec: Any) -> Any:
        """Names -> the built-in features; a function as is; a saved registration -> the
        registered function."""
        if isinstance(spec, dict):
            fn = keras.saving.get_registered_object(str(spec.get("registered")))
            if fn is None:
                raise InvalidInputError(
                    f"vaegmm: recon_features {spec['registered']!r} is not registered in this "
                    "process: import the module that defines it before loading"
                )
            return fn
        if callable(spec):
            return spec
        names = tuple(spec)
        for feature in names:
            if feature not in RECON_FEATURES:
                raise InvalidInputError(
                    f"unknown reconstruction feature {feature!r}; "
                    f"allowed: {', '.join(RECON_FEATURES)} (or a function f(x, x_recon))"
                )
        return lambda x, x_hat: reconstruction_features(x, x_hat, names)

    @property
    def vaegmm(self) -> keras.Model | None:
        """The whole model, row -> (reconstruction, z, memberships) on the mean code; pass it
        as ``vaegmm=`` to reuse the networks."""
        if self.encoder is None or self.decoder is None or self.density is None:
            return None
        x = keras.Input(self.encoder.inputs[0].shape[1:])
        mean, _ = self.encoder(x)
        x_hat = self.decoder(mean)
        zc = keras.layers.Concatenate()(
            [mean, keras.layers.Lambda(lambda pair: self._recon_fn(pair[0], pair[1]))([x, x_hat])]
        )
        return keras.Model(x, [x_hat, mean, self.density(zc)], name="vaegmm")

    def save(self, directory: Any) -> Any:
        spec = self.params["recon_features"]
        if isinstance(spec, dict) and spec.get("registered") is None:
            raise InvalidInputError(
                f"vaegmm: recon_features function {spec.get('function')} is not registered "
                "with Keras, so a loaded model could not find it: decorate it with "
                "@keras.saving.register_keras_serializable() (and import its module before "
                "loading)"
            )
        return super().save(directory)

    # ---- model ------------------------------------------------------------------------
    def _build(self, n_features: int) -> None:
        p = self.params
        if self.encoder is not None:
            return  # a fitted detector, or networks from ``vaegmm=``: train them further
        encoder_net, decoder_net, density_net = self._nets
        self.encoder = vae_encoder(
            (n_features,),
            p["latent_dim"],
            encoder_net or dense_stack(p["encoder_units"]),
            "vaegmm",
        )
        self.decoder = vae_decoder(
            p["latent_dim"],
            (n_features,),
            decoder_net or dense_stack(p["decoder_units"], output=n_features),
            "vaegmm",
        )
        probe = np.zeros((2, n_features), np.float32)
        k = int(self._recon_fn(tf.constant(probe), tf.constant(probe + 1.0)).shape[-1])
        zc = keras.Input((p["latent_dim"] + k,), name="z_features")
        if density_net is None:
            density_net = keras.Sequential(
                [
                    keras.layers.Dense(p["gmm_units"], activation="tanh"),
                    keras.layers.Dropout(0.5),
                    keras.layers.Dense(p["n_gmm"], activation="softmax"),
                ]
            )
        gamma = apply_network(
            density_net,
            zc,
            f"vaegmm: gmm_density_net must accept latent_dim + {k} = {p['latent_dim'] + k} inputs",
        )
        if gamma.shape[-1] != p["n_gmm"]:
            raise InvalidInputError(
                f"vaegmm: gmm_density_net outputs {gamma.shape[-1]} memberships; n_gmm is "
                f"{p['n_gmm']}"
            )
        self.density = keras.Model(zc, gamma, name="vaegmm_density")

    def _rows(self, X: np.ndarray) -> np.ndarray:
        array = np.asarray(X, dtype=np.float32)
        if array.ndim != 2:
            raise InvalidInputError(
                f"vaegmm: expected rows of shape (n, n_features); got shape {array.shape}"
            )
        expected = self.input_shape or array.shape[1:]
        return self._check_instances(array, tuple(expected))

    # ---- training ---------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        loss_fn: Any = None,
        w_recon: float | None = None,
        w_energy: float | None = None,
        w_cov_diag: float | None = None,
        optimizer: Any = None,
        cov_elbo: dict[str, Any] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
        log_metric: tuple[str, Any] | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Train on (mostly) normal rows, then estimate the mixture on them in batches.

        Arguments left None take the constructor's values; those given are recorded in
        ``params`` (and saved). ``cov_elbo``: ``dict(sim=0.05)``, ``dict(cov_diag=None)`` or
        ``dict(cov_full=None)``. ``loss_fn`` replaces the default loss; it is called as
        ``loss_fn(x, x_recon, ...)`` with those of ``z`` (code and reconstruction features),
        ``gamma``, ``w_recon``, ``w_energy``, ``w_cov_diag``, ``cov_full``, ``cov_diag`` and
        ``sim`` its signature names; ``beta`` times the latent KL is added.
        """
        for key, value in (
            ("w_recon", w_recon),
            ("w_energy", w_energy),
            ("w_cov_diag", w_cov_diag),
        ):
            if value is not None:
                self.params[key] = float(value)
        if cov_elbo is not None:
            self.params.update(elbo_settings(cov_elbo))
        p = self.params
        progress = self.progress = fit_progress(verbose, progress)
        metric = check_log_metric(log_metric)
        set_seed(p["seed"])
        rows = self._rows(X)
        if p["feature_names"] is not None and len(p["feature_names"]) != rows.shape[1]:
            raise InvalidInputError(
                f"vaegmm: {len(p['feature_names'])} feature_names for {rows.shape[1]} columns"
            )
        if self.input_shape is None:
            self.input_shape = (int(rows.shape[1]),)
            self._fit_normalisation(rows, p["normalise"])
        data = self._normalise(rows)
        self._build(rows.shape[1])
        encoder, decoder, density = self.encoder, self.decoder, self.density
        assert encoder is not None and decoder is not None and density is not None
        precision = tf.constant(elbo_precision(data, p["elbo_cov"], p["sigma"]))
        covariance = self._elbo_covariance(data)
        recon_features = self._recon_fn
        variables = (
            encoder.trainable_variables + decoder.trainable_variables + density.trainable_variables
        )
        optimizer = resolve_optimizer(optimizer, p["learning_rate"])
        w_recon_, w_energy_, w_cov, beta = (
            float(p["w_recon"]),
            float(p["w_energy"]),
            float(p["w_cov_diag"]),
            float(p["beta"]),
        )

        @tf.function
        def step(x: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                mean, log_var = encoder(x, training=True)
                z = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
                x_hat = decoder(z, training=True)
                zc = tf.concat([z, recon_features(x, x_hat)], axis=1)
                gamma = density(zc, training=True)
                kl = -0.5 * tf.reduce_mean(
                    tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
                )
                if loss_fn is None:
                    diff = x - x_hat
                    recon = 0.5 * tf.reduce_mean(tf.einsum("nd,de,ne->n", diff, precision, diff))
                    phi, mu, cov = gmm_parameters(zc, gamma)
                    energy, cov_diag = sample_energy(zc, phi, mu, cov)
                    mean_energy = tf.reduce_mean(energy)
                    main = w_recon_ * recon + w_energy_ * mean_energy + w_cov * cov_diag
                    parts = {"recon": recon, "energy": mean_energy}
                else:
                    main = call_loss(
                        loss_fn,
                        x,
                        x_hat,
                        z=zc,
                        gamma=gamma,
                        w_recon=w_recon_,
                        w_energy=w_energy_,
                        w_cov_diag=w_cov,
                        **covariance,
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
            (data,),
            epochs=epochs or p["epochs"],
            batch_size=batch_size or p["batch_size"],
            label="vaegmm",
            progress=progress,
            seed=p["seed"],
            log_metric=metric,
            optimizer=optimizer,
            variables=variables,
        )
        self._estimate_gmm(data)
        self._compile_energy()
        self._fit_score_scale(data)
        self.training = self._training_summary(
            history, started, training_rows=len(data), epochs=len(history)
        )
        self.training["history"] = history
        return self.training

    def _elbo_covariance(self, data: np.ndarray) -> dict[str, Any]:
        """alibi-detect's ``cov_full`` / ``cov_diag`` / ``sim`` for a custom ``loss_fn``."""
        p = self.params
        if p["elbo_cov"] == "full":
            cov = np.cov(data, rowvar=False) + 1e-3 * np.eye(data.shape[1])
            return {"cov_full": tf.constant(cov, tf.float32), "cov_diag": None, "sim": None}
        if p["elbo_cov"] == "features":
            diag = np.maximum(data.var(axis=0), 1e-6)
            return {"cov_full": None, "cov_diag": tf.constant(diag, tf.float32), "sim": None}
        return {"cov_full": None, "cov_diag": None, "sim": float(p["sigma"])}

    def _latent_features(
        self, x: tf.Tensor, sample: bool, draw: int = 0, per_row_noise: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """[z, reconstruction features] and x̂. Draw ``draw`` uses fixed-seed noise, so the
        same row always scores the same, in any batch (replays raise the same alerts).
        ``per_row_noise`` gives every row its own draw (for estimating the mixture, where
        the codes must spread as the posterior does)."""
        assert self.encoder is not None and self.decoder is not None
        mean, log_var = self.encoder(x, training=False)
        if sample:
            noise = (
                tf.random.stateless_normal(tf.shape(mean), seed=[draw, 7919])
                if per_row_noise
                else shared_draw_noise(mean, draw, 7919)
            )
            z = mean + tf.exp(0.5 * log_var) * noise
        else:
            z = mean
        x_hat = self.decoder(z, training=False)
        return tf.concat([z, self._recon_fn(x, x_hat)], axis=1), x_hat

    def _estimate_gmm(self, data: np.ndarray) -> None:
        """Mixture weights, means and covariances from the training rows, batch by batch."""
        assert self.density is not None
        k = self.params["n_gmm"]
        dims = int(self.density.inputs[0].shape[-1])
        weight = np.zeros(k)
        first = np.zeros((k, dims))
        second = np.zeros((k, dims, dims))
        size = int(self.params["score_batch_size"])
        for start in range(0, len(data), size):
            # Sampled codes, as in training and at prediction, so the mixture describes
            # what the scorer will see.
            zc, _ = self._latent_features(
                tf.constant(data[start : start + size]), sample=True, per_row_noise=True
            )
            gamma = self.density(zc, training=False).numpy().astype(np.float64)
            z = zc.numpy().astype(np.float64)
            weight += gamma.sum(axis=0)
            first += gamma.T @ z
            second += np.einsum("nk,nd,ne->kde", gamma, z, z)
        mu = first / weight[:, None]
        cov = second / weight[:, None, None] - np.einsum("kd,ke->kde", mu, mu)
        self.extra_state = {"phi": weight / len(data), "mu": mu, "cov": cov}

    def _fit_score_scale(self, data: np.ndarray) -> None:
        """Median and interquartile range of the training rows' energy and reconstruction
        error: the units in which ``energy+reconstruction`` adds them."""
        energy, error = score_at_verified_shapes(self._energy_fn, data, self._score_shape)
        scale = []
        for values in (energy, error.sum(axis=1)):
            low, median, high = np.percentile(values, [25, 50, 75])
            scale += [float(median), float(max(high - low, 1e-12))]
        self.extra_state["score_scale"] = np.asarray(scale)

    def _compile_energy(self) -> None:
        phi = tf.constant(np.asarray(self.extra_state["phi"], np.float32))
        mu = tf.constant(np.asarray(self.extra_state["mu"], np.float32))
        cov = tf.constant(np.asarray(self.extra_state["cov"], np.float32))
        samples = int(self.params["samples"])
        n_features = (self.input_shape or (0,))[0]

        def energy(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            total = tf.zeros([tf.shape(x)[0]], x.dtype)
            squared = tf.zeros_like(x)
            for draw in range(samples):
                zc, x_hat = self._latent_features(x, sample=samples > 1, draw=draw)
                total += sample_energy(zc, phi, mu, cov)[0]
                squared += tf.square(x - x_hat)
            return total / samples, squared / samples

        self._energy_fn = tf.function(
            energy, input_signature=[tf.TensorSpec([None, n_features], tf.float32)]
        )

    # ---- inference --------------------------------------------------------------------
    def expected(self, X: np.ndarray) -> np.ndarray:
        """Each row decoded from its mean code, in the rows' units."""
        self._require_fitted("expected()")
        assert self.encoder is not None and self.decoder is not None
        data = self._normalise(self._rows(X))
        mean, _ = self.encoder(tf.constant(data), training=False)
        decoded = np.asarray(self.decoder(mean, training=False))
        return decoded * self.std + self.mean

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """Sample energy per row (instance) and squared reconstruction error per feature."""
        self._require_fitted("score()")
        data = self._normalise(self._rows(X))
        energy, error = score_at_verified_shapes(
            self._energy_fn, data, self._score_shape, batch_size
        )
        if self.params.get("score_terms", "energy") == "energy+reconstruction":
            e_median, e_iqr, r_median, r_iqr = np.asarray(self.extra_state["score_scale"])
            energy = (energy - e_median) / e_iqr + (error.sum(axis=1) - r_median) / r_iqr
        return Scores(energy, error)

    # ---- persistence hooks ------------------------------------------------------------
    def _model_files(self) -> dict[str, keras.Model]:
        assert self.encoder is not None and self.decoder is not None
        assert self.density is not None
        return {
            "encoder.keras": self.encoder,
            "decoder.keras": self.decoder,
            "density.keras": self.density,
        }

    def _restore(self, models: dict[str, keras.Model]) -> None:
        self.encoder = models["encoder.keras"]
        self.decoder = models["decoder.keras"]
        self.density = models["density.keras"]
        scale = self.extra_state.get("score_scale")
        if self.params.get("score_terms") == "energy+reconstruction" and (
            scale is None or np.shape(scale) != (4,) or not np.all(np.isfinite(scale))
        ):
            raise ModelLoadError(
                "vaegmm: the model lacks the training score scale that "
                "score_terms='energy+reconstruction' needs; train it again"
            )
        self._compile_energy()


def elbo_precision(data: np.ndarray, elbo_cov: str, sigma: float) -> np.ndarray:
    """The inverse covariance P of the ELBO's Gaussian reconstruction term ½ dᵀ P d, for
    rows ``data`` (n, d): ``fixed`` I/sigma², ``features`` 1/variance on the diagonal,
    ``full`` the inverse covariance of ``data``."""
    n = data.shape[1]
    if elbo_cov == "fixed":
        return np.eye(n, dtype=np.float32) / float(sigma) ** 2
    if elbo_cov == "features":
        return np.diag(1.0 / np.maximum(data.var(axis=0), 1e-6)).astype(np.float32)
    cov = np.cov(data, rowvar=False) + 1e-3 * np.eye(n)
    return np.linalg.inv(cov).astype(np.float32)


def elbo_settings(cov_elbo: dict[str, Any]) -> dict[str, Any]:
    """alibi-detect's ``cov_elbo`` as ``elbo_cov`` (and ``sigma``).

    >>> elbo_settings(dict(sim=0.05)), elbo_settings(dict(cov_diag=None))
    ({'elbo_cov': 'fixed', 'sigma': 0.05}, {'elbo_cov': 'features'})
    """
    if not isinstance(cov_elbo, dict) or len(cov_elbo) != 1:
        raise InvalidInputError(
            "cov_elbo must be one of dict(cov_full=None), dict(cov_diag=None) or "
            f"dict(sim=<std>); got {cov_elbo!r}"
        )
    ((key, value),) = cov_elbo.items()
    if key == "cov_full":
        return {"elbo_cov": "full"}
    if key == "cov_diag":
        return {"elbo_cov": "features"}
    if key == "sim" and isinstance(value, int | float) and value > 0:
        return {"elbo_cov": "fixed", "sigma": float(value)}
    raise InvalidInputError(
        "cov_elbo must be one of dict(cov_full=None), dict(cov_diag=None) or "
        f"dict(sim=<std > 0>); got {cov_elbo!r}"
    )


OutlierVAEGMM = VAEGMMDetector
