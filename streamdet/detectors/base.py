"""The detector contract, and the state and persistence every detector shares.

A detector follows alibi-detect's API shape (``fit`` / ``infer_threshold`` / ``score`` /
``predict`` returning ``{"meta", "data"}``), declares the topic kinds it scores, its context
length and what its flag means, and saves itself as files plus one ``metadata.json``.
Nothing here assumes Keras or imports TensorFlow: a Keras detector (``keras_base``) saves
``.keras`` files loaded with ``safe_mode``; a classical one saves NumPy arrays
(``arrays.npz``, read without pickle). Loading checks the detector name, the format version,
the input shape and a SHA-256 of every file before anything reads them. A save is written
into a temporary directory and renamed, so a failed save never leaves half a model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from streamdet.core.errors import InvalidInputError, ModelLoadError, NotFittedError
from streamdet.core.progress import ProgressFn, silent
from streamdet.thresholds import percentile_threshold

# 2: Seq2Seq's threshold estimator became one ``threshold_net`` sub-model (alibi's layout).
FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
ARRAYS_FILE = "arrays.npz"
KINDS = ("timeseries", "tabular", "image")


@dataclass(frozen=True)
class Scores:
    """What :meth:`Detector.score` returns: one score per instance, and per element."""

    instance_score: np.ndarray
    feature_score: np.ndarray


@dataclass(frozen=True)
class ContractCase:
    """One way to build a detector for the generic contract checks (river's
    ``_unit_test_params``): a tiny, fast, seeded configuration and instances it fits on and
    scores (windows, rows or images, as ``score`` takes them).

    ``topic_params`` gives the ``detector.params`` a topic would configure for the same
    detector (it may write files, such as a classifier, into the folder it is given); by
    default the built detector's own ``params``, when they are plain JSON. A case built from
    user networks that no config can name sets ``configurable=False``.
    """

    label: str
    build: Callable[[], Detector]
    instances: np.ndarray
    topic_params: Callable[[Path], dict[str, Any]] | None = None
    configurable: bool = True

    def params_for_topic(self, folder: Path) -> dict[str, Any]:
        if self.topic_params is not None:
            return self.topic_params(folder)
        return dict(_jsonable(self.build().params))


REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector known to the config, the daemon, the CLI and the
    alert schema. A detector declares its ``name``, the topic ``kinds`` it scores and its
    context length (:meth:`Detector.context_length`); nothing else needs editing (the light
    catalog that config and the CLI read finds the module by these declarations)."""
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


# Batch shapes a compiled scorer may run at besides its reference shape (``score_batch_size``):
# a lone window need not pay for 64 rows, a large micro-batch need not pay 16 calls' overhead.
SCORING_SHAPES = (1, 8, 64, 256, 1024)


class Detector(ABC):
    """Shared state, checks, ``predict`` and persistence of every detector.

    Subclasses set ``name`` and ``kinds``, implement ``fit`` and ``score``, and say how their
    fitted state is written (:meth:`_write_state`) and read back (:meth:`_read_state`).
    Small numeric state (e.g. GMM parameters) can simply go in ``extra_state`` (saved in
    ``metadata.json``); arrays of any size in ``arrays`` (saved in ``arrays.npz``).
    """

    name: ClassVar[str] = "base"
    # Topic kinds (``KINDS``) this detector scores in the daemon.
    kinds: ClassVar[tuple[str, ...]] = ()
    data_type: ClassVar[str] = "time-series"
    # The key of ``predict()["data"]`` that holds the flag, and what a flag means.
    outcome_key: ClassVar[str] = "is_outlier"
    flag_meaning: ClassVar[str] = "the instance is an outlier"
    # The constructor defaults follow alibi-detect's pages; where streamdet's benchmarks found
    # better settings, the daemon and the ``evaluate`` commands start from these instead
    # (a topic's ``params`` override them).
    tuned_params: ClassVar[dict[str, Any]] = {}
    # True when ``fit`` on a fitted detector trains further (same normalisation): a
    # retraining then starts from the serving model's state.
    warm_start: ClassVar[bool] = False

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        """Tiny configurations the generic contract suite runs through fit -> score ->
        batch invariance -> save -> load in a fresh process -> retraining. Every detector
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
        # Small numeric state (e.g. GMM parameters): saved in metadata.json as lists, handed
        # back as arrays. Larger arrays go in ``arrays`` (arrays.npz).
        self.extra_state: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
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

    def _training_instances(self, X: np.ndarray, kinds: str) -> np.ndarray:
        """The newest ``params["max_training"]`` instances of ``X``, checked; the instance
        shape becomes the model's (``kinds`` names what fit takes, for the error)."""
        array = np.asarray(X, dtype=np.float32)
        if array.ndim < 2 or len(array) < 2:
            raise InvalidInputError(
                f"{self.name}: fit needs at least 2 instances ({kinds}); got shape {array.shape}"
            )
        array = self._check_instances(array[-self.params["max_training"] :], array.shape[1:])
        self.input_shape = tuple(array.shape[1:])
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

    @property
    def _score_shape(self) -> int:
        """Rows of the reference scoring shape (``score_batch_size``): every instance's
        score is the one a call of exactly this many rows gives it."""
        return int(self.params["score_batch_size"])

    # ---- the contract ---------------------------------------------------------------------
    @abstractmethod
    def fit(self, X: np.ndarray, **kwargs: Any) -> dict[str, Any]:
        """Fit on normal data; returns the training summary (also kept in ``training``).
        The daemon passes ``progress`` (a line per epoch; raising from it cancels) and,
        for a retraining, may pass ``epochs``."""

    @abstractmethod
    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """Instance and feature scores of ``X``."""

    def warm_up(self) -> None:
        """Score one all-zero instance now, so that the first live windows do not wait for
        the scorer to compile (a served model does this once, off the loop)."""
        if self.input_shape is not None:
            self.score(np.zeros((1, *self.input_shape), np.float32))

    def expected(self, X: np.ndarray) -> np.ndarray | None:
        """What the model expected each instance to be, in the instance's shape and units
        (its reconstruction or forecast): what an alert shows beside the observed values.
        None for a detector that cannot say."""
        return None

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
    def _write_state(self, target: Path) -> None:  # noqa: B027 (optional hook)
        """Write the fitted state that ``metadata.json`` and ``arrays.npz`` do not hold
        (a Keras detector writes its ``.keras`` files) into the directory ``target``."""

    def _read_state(self, directory: Path) -> None:  # noqa: B027 (optional hook)
        """Take back what :meth:`_write_state` wrote (its files' checksums are verified)."""

    def _metadata_extra(self) -> dict[str, Any]:
        """More fields for ``metadata.json`` (e.g. the Keras version that wrote it)."""
        return {}

    def save(self, directory: str | Path) -> Path:
        """Write the fitted detector into ``directory`` (created or replaced whole).

        Everything is written into a temporary directory beside it, which is renamed into
        place only once complete: a save that fails (a full disk, a network Keras cannot
        serialise) leaves no half-written model and keeps any previous one.
        """
        self._require_fitted("save()")
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            self._write_state(staging)
            if self.arrays:
                # Arrays only: np.load(allow_pickle=False) reads them back.
                np.savez(
                    staging / ARRAYS_FILE, **{k: np.asarray(v) for k, v in self.arrays.items()}
                )
            checksums = {
                path.name: _sha256(path) for path in sorted(staging.iterdir()) if path.is_file()
            }
            meta = {
                "detector": self.name,
                "format_version": FORMAT_VERSION,
                "streamdet_version": _package_version(),
                **self._metadata_extra(),
                "params": _jsonable(self.params),
                "input_shape": list(self.input_shape or ()),
                "normalisation": {"mean": _jsonable(self.mean), "std": _jsonable(self.std)},
                "threshold": _jsonable(self.threshold),
                "training": _jsonable(self.training),
                "models": checksums,
                "state": _jsonable(self.extra_state),
            }
            (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            _move_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(
        cls, directory: str | Path, expected_input_shape: tuple[int, ...] | None = None
    ) -> Self:
        """Load a detector saved by :meth:`save`, checking it is one of this class.

        ``expected_input_shape`` (the shape of one instance) makes loading fail early
        when the model was trained for other data.
        """
        folder = Path(directory)
        meta = read_metadata(folder)
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
        files = dict(meta.get("models") or {})
        for file_name, checksum in files.items():
            path = folder / file_name
            if Path(file_name).name != file_name or file_name == METADATA_FILE:
                raise ModelLoadError(f"{folder / METADATA_FILE} names an unsafe file {file_name!r}")
            if not path.is_file():
                raise ModelLoadError(f"{path} is missing")
            if _sha256(path) != checksum:
                raise ModelLoadError(f"{path} is corrupt: its SHA-256 does not match metadata")
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
        if ARRAYS_FILE in files:
            try:
                with np.load(folder / ARRAYS_FILE, allow_pickle=False) as stored:
                    detector.arrays = {key: stored[key] for key in stored.files}
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{folder / ARRAYS_FILE} is not readable: {exc}") from exc
        detector._read_state(folder)
        return detector


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` directory to ``target``; a previous ``target`` is
    moved aside first and removed only after the swap."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        staging.replace(target)
        return
    aside = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
    target.replace(aside)
    staging.replace(target)
    shutil.rmtree(aside, ignore_errors=True)


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
