"""PCA reconstruction: a classical detector for windows, rows and images (no Keras).

Each instance (a window of a series, a row, an image) is flattened, standardised with the
training data's per-feature mean and standard deviation, and projected on the principal
components that explain ``variance`` of the training instances (or the first
``n_components``). The score is the mean squared error of the reconstruction from those
components: a window shaped unlike any normal one leaves a large residual. Subsequence PCA
is among the strongest single-series detectors in recent benchmark studies (TSB-AD,
NeurIPS 2024) at a tiny fraction of a deep model's cost.

The state is two arrays (``arrays.npz``) plus ``metadata.json``: nothing is pickled.
Projections are computed as explicit element-wise sums per instance, so an instance gets the
bit-identical score alone or in any batch.

>>> rng = np.random.default_rng(0)
>>> t = np.arange(2000) / 5.0
>>> windows = sliding_windows(np.sin(t)[:, None] + 0.05 * rng.normal(size=(2000, 1)), 16)
>>> pca = PCADetector()
>>> pca.fit(windows[:1500])["components"]  # a noisy sine: two components
2
>>> bent = windows[1600:1601].copy(); bent[0, 8] += 2.0
>>> normal = pca.score(windows[1500:]).instance_score
>>> bool(pca.score(bent).instance_score[0] > 10 * np.median(normal))
True
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, silent
from streamdet.core.windows import sliding_windows
from streamdet.detectors.base import ContractCase, Detector, Scores, model_version, register

# Rows per chunk of the element-wise projection: bounds the (rows, k, d) intermediate.
_CELLS_PER_CHUNK = 1 << 22


def _project(data: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``data @ basis.T`` as an explicit sum per row: (n, d) x (k, d) -> (n, k). BLAS picks
    other kernels (and roundings) for other batch sizes; this does not."""
    out = np.empty((len(data), len(basis)), np.float64)
    rows = max(1, _CELLS_PER_CHUNK // max(basis.size, 1))
    for start in range(0, len(data), rows):
        chunk = data[start : start + rows]
        out[start : start + rows] = (chunk[:, None, :] * basis[None, :, :]).sum(axis=-1)
    return out


@register
class PCADetector(Detector):
    """Principal-component reconstruction error of windows, rows or images.

    Parameters
    ----------
    n_components
        Components kept; None: the fewest that explain ``variance`` of the training data
        (always fewer than the instance's size, so a residual remains).
    variance
        Share of the training variance the kept components explain (when ``n_components``
        is None).
    normalise
        Standardise each feature with the training mean and standard deviation first.
    max_training
        At most this many training instances (the newest) are used for the fit.
    """

    name: ClassVar[str] = "pca"
    kinds: ClassVar[tuple[str, ...]] = ("timeseries", "tabular", "image")
    data_type: ClassVar[str] = "time-series"

    def __init__(
        self,
        n_components: int | None = None,
        variance: float = 0.95,
        normalise: bool = True,
        max_training: int = 50_000,
        score_batch_size: int = 4096,
        seed: int | None = None,
    ) -> None:
        if n_components is not None and n_components < 1:
            raise InvalidInputError(f"pca: n_components must be at least 1; got {n_components}")
        if not 0.0 < variance <= 1.0:
            raise InvalidInputError(f"pca: variance must be within (0, 1]; got {variance}")
        if max_training < 2:
            raise InvalidInputError(f"pca: max_training must be at least 2; got {max_training}")
        super().__init__(
            n_components=n_components,
            variance=variance,
            normalise=normalise,
            max_training=max_training,
            score_batch_size=score_batch_size,
            seed=seed,
        )

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        rng = np.random.default_rng(0)
        t = np.arange(400, dtype=np.float32)[:, None]
        series = np.hstack([np.sin(t / 5), np.cos(t / 7)]) + 0.05 * rng.normal(size=(400, 2))
        a = rng.normal(size=(300, 1))
        rows = np.hstack([a, 2 * a, -a]) + 0.05 * rng.normal(size=(300, 3))
        return [
            ContractCase("windows", lambda: cls(), sliding_windows(series, 12)),
            ContractCase("rows", lambda: cls(n_components=1), rows.astype(np.float32)),
        ]

    # ---- the math -----------------------------------------------------------------------
    def _flat(self, X: np.ndarray) -> np.ndarray:
        return self._normalise(X).reshape(len(X), -1).astype(np.float64)

    def fit(
        self,
        X: np.ndarray,
        progress: ProgressFn | None = None,
        epochs: int | None = None,
        verbose: bool = False,
    ) -> dict[str, Any]:
        """Fit the components on normal instances (``epochs`` is accepted and ignored: a
        retraining passes it to every detector)."""
        started = time.perf_counter()
        array = self._training_instances(X, "windows, rows or images")
        self._fit_normalisation(array, self.params["normalise"])
        data = self._flat(array)
        center = data.mean(axis=0)
        _, singular, components = np.linalg.svd(data - center, full_matrices=False)
        explained = np.cumsum(singular**2) / max(float(np.sum(singular**2)), 1e-300)
        most = max(min(data.shape[1] - 1, len(data) - 1), 1)
        wanted = self.params["n_components"]
        if wanted is None:
            wanted = int(np.searchsorted(explained, self.params["variance"]) + 1)
        k = int(min(wanted, most))
        self.arrays = {"components": components[:k].copy(), "center": center}
        (progress or silent)(
            f"pca: {k} components explain {explained[k - 1]:.1%} of {len(data)} instances' variance"
        )
        self.training = {
            "model_version": model_version(self.name),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training_instances": len(data),
            "components": k,
            "explained_variance": float(explained[k - 1]),
            "seconds": round(time.perf_counter() - started, 3),
        }
        return self.training

    def _reconstruction(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centered standardised instances, their reconstruction), flattened."""
        components = np.asarray(self.arrays["components"], np.float64)
        centered = self._flat(array) - np.asarray(self.arrays["center"], np.float64)
        codes = _project(centered, components)
        return centered, _project(codes, np.ascontiguousarray(components.T))

    def expected(self, X: np.ndarray) -> np.ndarray:
        """Each instance rebuilt from the kept components, in its shape and units."""
        self._require_fitted("expected()")
        assert self.input_shape is not None and self.mean is not None and self.std is not None
        array = self._check_instances(X, self.input_shape)
        _, reconstruction = self._reconstruction(array)
        center = np.asarray(self.arrays["center"], np.float64)
        standard = (reconstruction + center).reshape(len(array), *self.input_shape)
        return standard * self.std + self.mean

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """Squared reconstruction error per cell (``feature_score``, the instance's shape)
        and its mean per instance."""
        self._require_fitted("score()")
        assert self.input_shape is not None
        array = self._check_instances(X, self.input_shape)
        centered, reconstruction = self._reconstruction(array)
        cells = np.square(centered - reconstruction)
        return Scores(cells.mean(axis=1), cells.reshape(len(array), *self.input_shape))
