"""The detector protocol and the machinery every Keras detector shares.

A detector follows alibi-detect's API shape (``fit`` / ``infer_threshold`` / ``score`` /
``predict`` returning ``{"meta", "data"}``) and saves itself as ``.keras`` files plus one
``metadata.json``. Loading checks the detector name, the format version, the input shape and
a SHA-256 of every model file before Keras sees them, and always uses ``safe_mode``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from streamdet.errors import InvalidInputError, ModelLoadError, NotFittedError
from streamdet.progress import ProgressFn, silent, stderr_progress
from streamdet.thresholds import percentile_threshold

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

# 2: Seq2Seq's threshold estimator became one ``threshold_net`` sub-model (alibi's layout).
FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
KINDS = ("timeseries", "tabular", "image")


@dataclass(frozen=True)
class Scores:
    """What :meth:`Detector.score` returns: one score per instance, and per element."""

    instance_score: np.ndarray
    feature_score: np.ndarray


@runtime_checkable
class Detector(Protocol):
    """The small protocol every streamdet detector implements."""

    name: ClassVar[str]

    def fit(self, X: np.ndarray, **kwargs: Any) -> dict[str, Any]: ...

    def infer_threshold(self, X: np.ndarray, **kwargs: Any) -> None: ...

    def score(self, X: np.ndarray) -> Scores: ...

    def predict(self, X: np.ndarray, **kwargs: Any) -> dict[str, dict[str, Any]]: ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def load(cls, directory: str | Path) -> Self: ...


@dataclass(frozen=True)
class ContractCase:
    """One way to build a detector for the generic contract checks (river's
    ``_unit_test_params``): a tiny, fast, seeded configuration and instances it fits on and
    scores (windows, rows or images, as ``score`` takes them)."""

    label: str
    build: Callable[[], KerasDetector]
    instances: np.ndarray


REGISTRY: dict[str, type[KerasDetector]] = {}


def register(cls: type[KerasDetector]) -> type[KerasDetector]:
    """Class decorator: make a detector known to the config, the daemon, the CLI and the
    alert schema. A detector declares its ``name``, the topic ``kinds`` it scores and its
    context length (:meth:`KerasDetector.context_length`); nothing else needs editing."""
    if not cls.name or (cls.name in REGISTRY and REGISTRY[cls.name] is not cls):
        raise ValueError(f"detector name {cls.name!r} is empty or already registered")
    unknown = set(cls.kinds) - set(KINDS)
    if not cls.kinds or unknown:
        raise ValueError(f"{cls.__name__}.kinds must be a non-empty subset of {KINDS}")
    if "contract_cases" not in vars(cls):
        raise ValueError(
            f"{cls.__name__} must define contract_cases(): the generic contract suite runs "
            "every registered detector through them"
        )
    REGISTRY[cls.name] = cls
    return cls


def detectors_for(kind: str) -> tuple[str, ...]:
    """Registered detector names that score topics of ``kind``, sorted."""
    return tuple(sorted(name for name, cls in REGISTRY.items() if kind in cls.kinds))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``metadata.json`` of a saved detector directory."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise ModelLoadError(f"{directory} holds no {METADATA_FILE}: not a saved streamdet model")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or "detector" not in meta:
        raise ModelLoadError(f"{path} does not describe a detector (no 'detector' field)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has format_version {meta.get('format_version')!r}; "
            f"this streamdet reads format_version {FORMAT_VERSION}"
        )
    return meta


def set_seed(seed: int | None) -> None:
    """Seed numpy, Python and TensorFlow so a fit can be repeated."""
    if seed is not None:
        keras.utils.set_random_seed(seed)


def score_in_fixed_batches(fn: Any, data: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    """Run a compiled ``fn(batch) -> tensor | tuple of tensors`` over ``data`` in batches
    of exactly ``batch_size`` rows (the last one zero-padded), and concatenate the outputs.

    One shape means one compiled program: the kernels XLA and oneDNN pick depend on the
    batch size, and different kernels round differently, so a window scored alone and the
    same window scored among a thousand would otherwise differ in the last bits. Replays,
    alert ids and a threshold sitting exactly on a training score rely on a window always
    getting the same score. Rows of one batch never mix, so padding changes nothing.

    >>> double = lambda x: 2 * x
    >>> score_in_fixed_batches(double, np.arange(5, dtype=np.float32)[:, None], 4)[0][:, 0]
    array([0., 2., 4., 6., 8.], dtype=float32)
    """
    if batch_size < 1:
        raise InvalidInputError(f"score_batch_size must be >= 1; got {batch_size}")
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(data), batch_size):
        chunk = data[start : start + batch_size]
        n = len(chunk)
        if n < batch_size:
            padding = np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        out = fn(tf.constant(chunk))
        outputs = out if isinstance(out, tuple | list) else (out,)
        parts.append(tuple(np.asarray(o.numpy())[:n] for o in outputs))
    return tuple(np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))


def shared_draw_noise(mean: tf.Tensor, draw: int, salt: int) -> tf.Tensor:
    """Fixed-seed noise for sampling draw ``draw``: one vector, the same for every row.

    Noise drawn per row would tie a row's score to its position in the batch; one vector
    per draw keeps every row's ``samples`` draws independent of each other and of the batch.
    """
    noise = tf.random.stateless_normal(tf.shape(mean)[1:], seed=[draw, salt], dtype=mean.dtype)
    return tf.broadcast_to(noise, tf.shape(mean))


def resolve_optimizer(optimizer: Any, learning_rate: float) -> keras.optimizers.Optimizer:
    """The optimizer ``fit`` uses: a Keras optimizer instance as given, an optimizer class
    instantiated with ``learning_rate``, or (None) Adam with ``learning_rate`` and gradients
    clipped at norm 1."""
    if optimizer is None:
        return keras.optimizers.Adam(learning_rate, clipnorm=1.0)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
        return optimizer(learning_rate=learning_rate)
    raise InvalidInputError(
        f"optimizer must be a Keras optimizer (instance or class); got {type(optimizer).__name__}"
    )


def call_loss(loss_fn: Any, *args: Any, **available: Any) -> tf.Tensor:
    """``loss_fn(*args, **kwargs)`` with just the keyword arguments its signature names (all
    of them if it takes ``**kwargs``), reduced to a scalar. So a plain Keras loss
    ``(y_true, y_pred)`` and a loss that also wants e.g. ``z``, ``gamma`` or ``w_energy``
    both work."""
    try:
        parameters = inspect.signature(loss_fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        parameters = ()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        kwargs = available
    else:
        names = {p.name for p in parameters}
        kwargs = {k: v for k, v in available.items() if k in names}
    return tf.reduce_mean(loss_fn(*args, **kwargs))


def fit_progress(verbose: bool, progress: ProgressFn | None) -> ProgressFn:
    """Where ``fit`` reports epochs: ``progress`` if given, else stderr when ``verbose``."""
    if progress is not None:
        return progress
    return stderr_progress if verbose else silent


def check_log_metric(log_metric: Any) -> tuple[str, Any] | None:
    """alibi-detect's ``log_metric``: ``(name, keras.metrics.Metric)``, updated with
    (input, reconstruction) each batch and reported per epoch."""
    if log_metric is None:
        return None
    if (
        not isinstance(log_metric, tuple | list)
        or len(log_metric) != 2
        or not isinstance(log_metric[0], str)
        or not hasattr(log_metric[1], "update_state")
    ):
        raise InvalidInputError(
            "log_metric must be a (name, keras.metrics.Metric) pair, e.g. "
            "('mse', keras.metrics.MeanSquaredError())"
        )
    return (log_metric[0], log_metric[1])


def holdout_split(data: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, validation rows): the last ``fraction`` of ``data`` is held out.

    The last rows, not a random sample: windows cut from one series overlap their
    neighbours, so a random sample would validate on data the model trained on; the tail
    is also the most recent data, the part a stream's next windows resemble most.

    >>> train, validation = holdout_split(np.arange(10), 0.2)
    >>> train.tolist(), validation.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])

    A share that rounds to nothing still holds out one instance; a single instance is
    not split (it is all there is to train on), so a tiny warm-up never fails.

    >>> holdout_split(np.arange(3), 0.1)[1].tolist()
    [2]
    >>> holdout_split(np.arange(1), 0.1)[1] is None
    True
    >>> holdout_split(np.arange(3), 0.0)[1] is None
    True
    """
    if not 0.0 <= fraction < 1.0:
        raise InvalidInputError(f"validation_fraction must be in [0, 1); got {fraction}")
    if fraction == 0.0 or len(data) < 2:
        return data, None
    held = min(max(round(len(data) * fraction), 1), len(data) - 1)
    return data[:-held], data[-held:]


@dataclass
class EpochSelection:
    """Keep the weights of the epoch whose loss on held-out normal data was lowest.

    ``loss()`` evaluates the held-out data with the current weights; ``models`` are the
    Keras models whose weights are kept and restored. With ``patience`` > 0 training stops
    after that many epochs without a new best. After :func:`train_epochs`, ``best_epoch``
    and ``best_loss`` say which epoch was kept. Only label-free, normal data is involved,
    so the choice can be made on any stream or benchmark without looking at anomalies.
    """

    loss: Callable[[], float]
    models: tuple[keras.Model, ...]
    patience: int = 0
    best_epoch: int = 0
    best_loss: float = float("inf")
    _weights: list[list[np.ndarray]] | None = None

    def after_epoch(self, epoch: int) -> tuple[float, bool]:
        """(validation loss, whether to stop) after ``epoch``; keeps its weights if best."""
        value = float(self.loss())
        if value < self.best_loss:
            self.best_loss, self.best_epoch = value, epoch
            self._weights = [model.get_weights() for model in self.models]
        stop = self.patience > 0 and epoch - self.best_epoch >= self.patience
        return value, stop

    def restore(self) -> None:
        if self._weights is not None:
            for model, weights in zip(self.models, self._weights, strict=True):
                model.set_weights(weights)


def train_epochs(
    step: Any,
    arrays: tuple[np.ndarray, ...],
    *,
    epochs: int,
    batch_size: int,
    label: str,
    progress: ProgressFn,
    seed: int | None = None,
    first_epoch: int = 1,
    total_epochs: int | None = None,
    log_metric: tuple[str, Any] | None = None,
    selection: EpochSelection | None = None,
) -> list[dict[str, float]]:
    """Run a compiled ``step(*batch) -> {loss_name: tensor}`` over shuffled mini-batches.

    Prints one line per epoch through ``progress`` and returns the per-epoch mean losses.
    ``first_epoch`` and ``total_epochs`` number the lines when a caller runs the epochs
    one call at a time (to change a schedule between them). ``log_metric`` is reset before
    each epoch (the step updates it) and its result joins the epoch's losses. With a
    ``selection``, each epoch also reports ``val_loss``, training may stop early, and the
    best epoch's weights are restored at the end.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1; got {batch_size}")
    n = len(arrays[0])
    dataset = (
        tf.data.Dataset.from_tensor_slices(arrays)
        .shuffle(min(n, 50_000), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    history: list[dict[str, float]] = []
    total = total_epochs or epochs
    for epoch in range(first_epoch, first_epoch + epochs):
        started = time.perf_counter()
        totals: dict[str, float] = {}
        batches = 0
        if log_metric is not None:
            log_metric[1].reset_state()
        for batch in dataset:
            losses = step(*batch)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            batches += 1
        means = {key: value / max(batches, 1) for key, value in totals.items()}
        if log_metric is not None:
            means[log_metric[0]] = float(log_metric[1].result())
        stop = False
        if selection is not None:
            means["val_loss"], stop = selection.after_epoch(epoch)
        history.append(means)
        shown = " ".join(f"{k}={v:.5g}" for k, v in means.items())
        progress(f"{label} epoch {epoch}/{total} {shown} ({time.perf_counter() - started:.1f}s)")
        if stop:
            progress(
                f"{label}: no better val_loss for {selection.patience} epochs; stopping"  # type: ignore[union-attr]
            )
            break
    if selection is not None:
        selection.restore()
        progress(f"{label}: kept epoch {selection.best_epoch} (val_loss={selection.best_loss:.5g})")
    return history


class KerasDetector(ABC):
    """Shared state and persistence for detectors built from Keras models.

    Subclasses set ``name``, implement ``_build`` (make the Keras models from ``params``),
    ``_model_files`` (the models to save, by file name), ``_restore`` (take them back after
    loading) and the math in ``fit`` / ``score``.
    """

    name: ClassVar[str] = "base"
    # Topic kinds (``KINDS``) this detector scores in the daemon.
    kinds: ClassVar[tuple[str, ...]] = ()
    data_type: ClassVar[str] = "time-series"
    # The key of ``predict()["data"]`` that says whether an instance is flagged.
    outcome_key: ClassVar[str] = "is_outlier"
    # What the daemon passes to ``infer_threshold`` besides ``threshold_perc``.
    stream_threshold_kwargs: ClassVar[dict[str, Any]] = {}
    # The constructor defaults follow alibi-detect's pages; where streamdet's benchmarks found
    # better settings, the daemon and the ``evaluate`` commands start from these instead
    # (a topic's ``params`` override them).
    tuned_params: ClassVar[dict[str, Any]] = {}
    # True when ``fit`` on a fitted detector trains its networks further (same
    # normalisation): a retraining then starts from the serving model's weights.
    warm_start: ClassVar[bool] = False

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        """Tiny configurations the generic contract suite (tests/test_detector_contract.py)
        runs through fit -> infer_threshold -> predict -> save -> load. Every detector
        defines its own (``register`` refuses one that does not); alibi-compatible ones
        add one built the alibi way."""
        return []

    @classmethod
    def tuned(cls, **params: Any) -> Self:
        """A detector with :attr:`tuned_params`, overridden by ``params``."""
        return cls(**{**cls.tuned_params, **params})

    @classmethod
    def context_length(cls, params: dict[str, Any], window_seq_len: int) -> int:
        """Events one scored time-series instance spans, given the topic's ``params`` and its
        ``window.seq_len`` (rows and images are one event each)."""
        return window_seq_len

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.input_shape: tuple[int, ...] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.threshold: Any = None
        self.training: dict[str, Any] = {}
        # Small numeric state that is not a Keras model (e.g. GMM parameters): saved in
        # metadata.json as lists, handed back to ``_restore`` as arrays.
        self.extra_state: dict[str, Any] = {}
        self.progress: ProgressFn = silent

    # ---- validation -------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.input_shape is not None

    def _require_fitted(self, action: str) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.name}: call fit() (or load a saved model) before {action}")

    def _check_instances(self, X: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
        """Check a batch of instances against ``expected`` (the shape after the batch axis)."""
        array = np.asarray(X, dtype=np.float32)
        if array.shape[1:] != tuple(expected):
            raise InvalidInputError(
                f"{self.name}: expected instances of shape {tuple(expected)} "
                f"(batch, {', '.join(map(str, expected))}); got array of shape {array.shape}"
            )
        if len(array) == 0:
            raise InvalidInputError(f"{self.name}: got an empty batch")
        bad = ~np.isfinite(array)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidInputError(f"{self.name}: input contains NaN or inf (first at {where})")
        return array

    def _normalise(self, array: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.std is not None
        return ((array - self.mean) / self.std).astype(np.float32)

    def _fit_normalisation(self, array: np.ndarray, normalise: bool) -> None:
        n_features = array.shape[-1]
        flat = array.reshape(-1, n_features)
        if normalise:
            self.mean = flat.mean(axis=0).astype(np.float32)
            self.std = np.maximum(flat.std(axis=0), 1e-6).astype(np.float32)
        else:
            self.mean = np.zeros(n_features, dtype=np.float32)
            self.std = np.ones(n_features, dtype=np.float32)

    def _set_threshold(self, threshold: Any) -> None:
        """A threshold given to the constructor: a number, one per feature, or None."""
        if threshold is None:
            self.threshold = None
            return
        value = np.asarray(threshold, dtype=np.float64)
        if value.ndim > 1 or not np.all(np.isfinite(value)):
            raise InvalidInputError(
                f"{self.name}: threshold must be a finite number or one per feature; "
                f"got {threshold!r}"
            )
        self.threshold = float(value) if value.ndim == 0 else value

    def _batch(self, batch_size: int | None) -> int:
        """Rows per forward pass: ``batch_size`` for this call, else ``score_batch_size``
        (one fixed shape, so an instance's score never depends on its batch)."""
        size = int(self.params["score_batch_size"] if batch_size is None else batch_size)
        if size < 1:
            raise InvalidInputError(f"{self.name}: batch_size must be >= 1; got {size}")
        return size

    # ---- scoring defaults: one threshold on the instance score ---------------------------
    @abstractmethod
    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """Instance and feature scores of ``X``."""

    def infer_threshold(
        self, X: np.ndarray, threshold_perc: float = 95.0, batch_size: int | None = None
    ) -> None:
        """Set the threshold so that ``threshold_perc`` % of the instances of ``X`` score
        at or below it (``X``: mostly normal data, with about ``100 - threshold_perc`` %
        outliers)."""
        self._require_fitted("infer_threshold()")
        scores = self.score(X, batch_size=batch_size).instance_score
        self.threshold = percentile_threshold(scores, threshold_perc)

    def predict(
        self,
        X: np.ndarray,
        batch_size: int | None = None,
        return_instance_score: bool = True,
        return_feature_score: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """``{"meta", "data"}``: ``data`` holds the flag (``outcome_key``: instance score
        above the threshold, shape ``(batch,)``), ``instance_score`` (None unless
        ``return_instance_score``) and, when ``return_feature_score``, ``feature_score``."""
        scores = self.score(X, batch_size=batch_size)
        threshold = np.inf if self.threshold is None else float(self.threshold)
        data: dict[str, Any] = {
            self.outcome_key: (scores.instance_score > threshold).astype(np.int8),
            "instance_score": scores.instance_score if return_instance_score else None,
        }
        if return_feature_score:
            data["feature_score"] = scores.feature_score
        return {"meta": {**self._meta(), "outlier_type": "instance"}, "data": data}

    def _training_summary(
        self, history: list[dict[str, float]], started: float, **counts: Any
    ) -> dict[str, Any]:
        """What ``fit`` returns and saves: version, time, sizes, final losses, duration."""
        return {
            "model_version": model_version(self.name),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **counts,
            "final_loss": history[-1] if history else {},
            "seconds": round(time.perf_counter() - started, 2),
        }

    # ---- predict ----------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "detector_type": "outlier",
            "data_type": self.params.get("data_type") or self.data_type,
            "online": False,
            "version": self.training.get("model_version"),
            "threshold": _jsonable(self.threshold),
        }

    # ---- persistence ------------------------------------------------------------------
    @abstractmethod
    def _model_files(self) -> dict[str, keras.Model]:
        """The Keras models to save, by file name (``*.keras``)."""

    @abstractmethod
    def _restore(self, models: dict[str, keras.Model]) -> None:
        """Take back the models that :meth:`_model_files` named, after loading."""

    def save(self, directory: str | Path) -> Path:
        """Write the models (``.keras``) and ``metadata.json`` into ``directory``."""
        self._require_fitted("save()")
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        checksums = {}
        for file_name, model in self._model_files().items():
            path = target / file_name
            model.save(path)
            checksums[file_name] = _sha256(path)
        meta = {
            "detector": self.name,
            "format_version": FORMAT_VERSION,
            "streamdet_version": _package_version(),
            "keras_version": keras.__version__,
            "params": _jsonable(self.params),
            "input_shape": list(self.input_shape or ()),
            "normalisation": {"mean": _jsonable(self.mean), "std": _jsonable(self.std)},
            "threshold": _jsonable(self.threshold),
            "training": _jsonable(self.training),
            "models": checksums,
            "state": _jsonable(self.extra_state),
        }
        # Write then rename, so a crash never leaves a half-written metadata file behind.
        tmp = target / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        tmp.replace(target / METADATA_FILE)
        return target

    @classmethod
    def load(
        cls, directory: str | Path, expected_input_shape: tuple[int, ...] | None = None
    ) -> Self:
        """Load a detector saved by :meth:`save`, checking it is one of this class.

        ``expected_input_shape`` (the shape of one instance) makes loading fail early
        when the model was trained for other data.
        """
        meta = read_metadata(directory)
        if meta["detector"] != cls.name:
            raise ModelLoadError(
                f"{directory} holds a '{meta['detector']}' model, not a '{cls.name}' model"
            )
        shape = tuple(meta.get("input_shape") or ())
        if expected_input_shape is not None and shape != tuple(expected_input_shape):
            raise ModelLoadError(
                f"{directory}: the model expects instances of shape {shape}, "
                f"not {tuple(expected_input_shape)}"
            )
        models: dict[str, keras.Model] = {}
        for file_name, checksum in dict(meta.get("models") or {}).items():
            path = Path(directory) / file_name
            if not path.is_file():
                raise ModelLoadError(f"{path} is missing")
            if _sha256(path) != checksum:
                raise ModelLoadError(f"{path} is corrupt: its SHA-256 does not match metadata")
            try:
                models[file_name] = keras.saving.load_model(path, compile=False, safe_mode=True)
            except Exception as exc:  # Keras raises many types for a bad archive
                raise ModelLoadError(f"{path} could not be loaded by Keras: {exc}") from exc
        try:
            detector = cls(**meta.get("params", {}))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"{directory}: its params do not fit this streamdet's {cls.name}: {exc}"
            ) from None
        detector.input_shape = shape
        norm = meta.get("normalisation") or {}
        try:
            detector.mean = np.asarray(norm.get("mean"), dtype=np.float32)
            detector.std = np.asarray(norm.get("std"), dtype=np.float32)
            threshold = meta.get("threshold")
            detector.threshold = (
                np.asarray(threshold, dtype=np.float64)
                if isinstance(threshold, list)
                else threshold
            )
            if threshold is not None and not np.all(np.isfinite(np.asarray(threshold, float))):
                raise ValueError("the threshold is not finite")
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"{directory}: unusable threshold or normalisation: {exc}"
            ) from None
        if not (np.all(np.isfinite(detector.mean)) and np.all(np.isfinite(detector.std))):
            raise ModelLoadError(f"{directory}: the normalisation holds NaN or inf")
        if np.any(detector.std <= 0):
            raise ModelLoadError(f"{directory}: the normalisation has a zero or negative std")
        detector.training = meta.get("training") or {}
        detector.extra_state = {
            key: np.asarray(value) if isinstance(value, list) else value
            for key, value in (meta.get("state") or {}).items()
        }
        detector._restore(models)
        return detector


def _package_version() -> str:
    from streamdet import __version__

    return __version__


def _jsonable(value: Any) -> Any:
    """Convert numpy values (and containers of them) into plain JSON types."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def model_version(name: str) -> str:
    """A version string for a freshly trained model: detector name and UTC time."""
    return f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
