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
>>> a = rng.normal(size=(1000, 1))
>>> normal = (np.hstack([a, 2 * a, -a]) + 0.01 * rng.normal(size=(1000, 3))).astype("float32")
>>> det = VAEGMMDetector(latent_dim=1, epochs=30, samples=2, seed=0)
>>> summary = det.fit(normal)
>>> det.infer_threshold(normal, threshold_perc=95)
>>> out = det.predict(np.array([[1.0, 2.0, -1.0], [1.0, -2.0, 1.0]], dtype="float32"))
>>> out["data"]["is_outlier"].tolist(), out["meta"]["data_type"]
([0, 1], 'tabular')
"""

from __future__ import annotations

import math
import time
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
from streamdet.errors import InvalidInputError
from streamdet.progress import ProgressFn, silent

ElboCov = Literal["fixed", "features", "full"]
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


def build_dense_vae(
    n_features: int,
    encoder_units: list[int],
    decoder_units: list[int],
    latent_dim: int,
    prefix: str,
) -> tuple[keras.Model, keras.Model]:
    """A tanh MLP encoder (row -> mean, log_var) and a linear-output MLP decoder."""
    x = keras.Input((n_features,), name="row")
    h = x
    for units in encoder_units:
        h = keras.layers.Dense(units, activation="tanh")(h)
    mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    encoder = keras.Model(x, [mean, log_var], name=f"{prefix}_encoder")
    z = keras.Input((latent_dim,), name="z")
    g = z
    for units in decoder_units:
        g = keras.layers.Dense(units, activation="tanh")(g)
    decoder = keras.Model(z, keras.layers.Dense(n_features)(g), name=f"{prefix}_decoder")
    return encoder, decoder


@register
class VAEGMMDetector(KerasDetector):
    """VAE + GMM energy outlier detector for rows of numeric features.

    Parameters
    ----------
    encoder_units, decoder_units
        Hidden layer widths (tanh) of the encoder and decoder.
    latent_dim
        Size of the VAE's latent code.
    n_gmm
        Number of mixture components.
    gmm_units
        Hidden width of the density (membership) net.
    recon_features
        Reconstruction features appended to the latent code (pluggable by name).
    elbo_cov
        Covariance of the ELBO's Gaussian likelihood: ``fixed`` (scale ``sigma``; a tight
        likelihood keeps the posterior narrow, so sampled codes stay informative),
        ``features`` (each feature's training variance) or ``full`` (the covariance of X).
    w_recon, w_energy, w_cov_diag, beta
        Loss weights.
    samples
        Latent draws averaged at prediction.
    feature_names
        Names of the columns, stored with the model (the daemon maps JSON fields by them).
    """

    name: ClassVar[str] = "vaegmm"
    kinds: ClassVar[tuple[str, ...]] = ("tabular",)
    data_type: ClassVar[str] = "tabular"

    def __init__(
        self,
        encoder_units: tuple[int, ...] | list[int] = (60, 30),
        decoder_units: tuple[int, ...] | list[int] = (30, 60),
        latent_dim: int = 2,
        n_gmm: int = 2,
        gmm_units: int = 10,
        recon_features: tuple[str, ...] | list[str] = RECON_FEATURES,
        elbo_cov: ElboCov = "fixed",
        sigma: float = 0.1,
        w_recon: float = 1.0,
        w_energy: float = 0.1,
        w_cov_diag: float = 0.005,
        beta: float = 1.0,
        samples: int = 10,
        epochs: int = 30,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        normalise: bool = True,
        feature_names: list[str] | None = None,
        score_batch_size: int = 256,
        seed: int | None = None,
    ) -> None:
        if elbo_cov not in ("fixed", "features", "full"):
            raise InvalidInputError(
                f"elbo_cov must be 'fixed', 'features' or 'full'; got {elbo_cov!r}"
            )
        for feature in recon_features:
            if feature not in RECON_FEATURES:
                raise InvalidInputError(
                    f"unknown reconstruction feature {feature!r}; "
                    f"allowed: {', '.join(RECON_FEATURES)}"
                )
        super().__init__(
            encoder_units=list(encoder_units),
            decoder_units=list(decoder_units),
            latent_dim=latent_dim,
            n_gmm=n_gmm,
            gmm_units=gmm_units,
            recon_features=list(recon_features),
            elbo_cov=elbo_cov,
            sigma=sigma,
            w_recon=w_recon,
            w_energy=w_energy,
            w_cov_diag=w_cov_diag,
            beta=beta,
            samples=samples,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            normalise=normalise,
            feature_names=feature_names,
            score_batch_size=score_batch_size,
            seed=seed,
        )
        self.encoder: keras.Model | None = None
        self.decoder: keras.Model | None = None
        self.density: keras.Model | None = None
        self._energy_fn: Any = None

    # ---- model ------------------------------------------------------------------------
    def _build(self, n_features: int) -> None:
        p = self.params
        self.encoder, self.decoder = build_dense_vae(
            n_features, p["encoder_units"], p["decoder_units"], p["latent_dim"], "vaegmm"
        )
        zc = keras.Input((p["latent_dim"] + len(p["recon_features"]),), name="z_features")
        d = keras.layers.Dense(p["gmm_units"], activation="tanh")(zc)
        d = keras.layers.Dropout(0.5)(d)
        gamma = keras.layers.Dense(p["n_gmm"], activation="softmax")(d)
        self.density = keras.Model(zc, gamma, name="vaegmm_density")

    def _rows(self, X: np.ndarray) -> np.ndarray:
        array = np.asarray(X, dtype=np.float32)
        if array.ndim != 2:
            raise InvalidInputError(
                f"vaegmm: expected rows of shape (n, n_features); got shape {array.shape}"
            )
        expected = self.input_shape or array.shape[1:]
        return self._check_instances(array, tuple(expected))

    def _recon_scale(self, data: np.ndarray) -> np.ndarray:
        """The inverse covariance used by the ELBO's reconstruction term."""
        p = self.params
        n = data.shape[1]
        if p["elbo_cov"] == "fixed":
            return np.eye(n, dtype=np.float32) / float(p["sigma"]) ** 2
        if p["elbo_cov"] == "features":
            return np.diag(1.0 / np.maximum(data.var(axis=0), 1e-6)).astype(np.float32)
        cov = np.cov(data, rowvar=False) + 1e-3 * np.eye(n)
        return np.linalg.inv(cov).astype(np.float32)

    # ---- training ---------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, epochs: int | None = None, progress: ProgressFn = silent
    ) -> dict[str, Any]:
        """Train on (mostly) normal rows, then estimate the mixture on them in batches."""
        self.progress = progress
        p = self.params
        set_seed(p["seed"])
        rows = self._rows(X)
        self.input_shape = (int(rows.shape[1]),)
        if p["feature_names"] is not None and len(p["feature_names"]) != rows.shape[1]:
            raise InvalidInputError(
                f"vaegmm: {len(p['feature_names'])} feature_names for {rows.shape[1]} columns"
            )
        self._fit_normalisation(rows, p["normalise"])
        data = self._normalise(rows)
        self._build(rows.shape[1])
        encoder, decoder, density = self.encoder, self.decoder, self.density
        assert encoder is not None and decoder is not None and density is not None
        precision = tf.constant(self._recon_scale(data))
        names = tuple(p["recon_features"])
        variables = (
            encoder.trainable_variables + decoder.trainable_variables + density.trainable_variables
        )
        optimizer = keras.optimizers.Adam(p["learning_rate"], clipnorm=1.0)
        w_recon, w_energy, w_cov, beta = (
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
                diff = x - x_hat
                recon = 0.5 * tf.reduce_mean(tf.einsum("nd,de,ne->n", diff, precision, diff))
                zc = tf.concat([z, reconstruction_features(x, x_hat, names)], axis=1)
                gamma = density(zc, training=True)
                phi, mu, cov = gmm_parameters(zc, gamma)
                energy, cov_diag = sample_energy(zc, phi, mu, cov)
                kl = -0.5 * tf.reduce_mean(
                    tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
                )
                mean_energy = tf.reduce_mean(energy)
                loss = w_recon * recon + w_energy * mean_energy + w_cov * cov_diag + beta * kl
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return {"loss": loss, "recon": recon, "energy": mean_energy, "kl": kl}

        started = time.perf_counter()
        history = train_epochs(
            step,
            (data,),
            epochs=epochs or p["epochs"],
            batch_size=p["batch_size"],
            label="vaegmm",
            progress=progress,
            seed=p["seed"],
        )
        self._estimate_gmm(data)
        self._compile_energy()
        self.threshold = None
        self.training = self._training_summary(
            history, started, training_rows=len(data), epochs=len(history)
        )
        return self.training

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
        features = reconstruction_features(x, x_hat, tuple(self.params["recon_features"]))
        return tf.concat([z, features], axis=1), x_hat

    def _estimate_gmm(self, data: np.ndarray) -> None:
        """Mixture weights, means and covariances from the training rows, batch by batch."""
        assert self.density is not None
        k = self.params["n_gmm"]
        dims = self.params["latent_dim"] + len(self.params["recon_features"])
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
    def score(self, X: np.ndarray) -> Scores:
        """Sample energy per row (instance) and squared reconstruction error per feature."""
        self._require_fitted("score()")
        data = self._normalise(self._rows(X))
        energy, error = score_in_fixed_batches(
            self._energy_fn, data, int(self.params["score_batch_size"])
        )
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
        self._compile_energy()
