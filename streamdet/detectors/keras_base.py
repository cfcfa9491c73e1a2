"""What every Keras detector shares: persistence as ``.keras`` files, fixed-shape scoring,
seeding, optimisers, losses and the epoch loop with held-out epoch selection.

Models are saved with ``model.save`` and loaded with ``safe_mode=True`` and ``compile=False``
after their SHA-256 is checked (:class:`~streamdet.detectors.base.Detector` does that).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.errors import InvalidInputError, ModelLoadError
from streamdet.core.progress import ProgressFn, silent, stderr_progress
from streamdet.core.tensorflow import load_tensorflow
from streamdet.detectors.base import SCORING_SHAPES, Detector, read_metadata

keras, tf = load_tensorflow()


def set_seed(seed: int | None) -> None:
    """Seed numpy, Python and TensorFlow so a fit can be repeated."""
    if seed is not None:
        keras.utils.set_random_seed(seed)


# Padding a call may carry: up to as many rows as it holds, and up to this many whatever it
# holds (below ~64 rows a call's cost is mostly its overhead).
_FREE_PADDING = 64
_PROBE_SEED = 20260
# A shape is checked (compiled, about a second) once calls have wanted it this many times:
# a stream wants its shapes again and again, a one-off call never pays for the compilation.
CHECK_AFTER_WANTED = 3
_verified_scorers: weakref.WeakKeyDictionary[Any, VerifiedShapes] = weakref.WeakKeyDictionary()
# Checks running in the background, finished before the interpreter exits (TensorFlow
# aborts a process whose threads are still in it at exit).
_running_checks: set[threading.Thread] = set()


def scoring_checks_running() -> int:
    """Scoring-shape checks under way in this process."""
    return len(_running_checks)


# Set at exit: checks not begun are dropped and a check under way stops at its next call
# (a short command must not wait seconds for compilations it will never use).
_exiting = threading.Event()


def settle_scoring_checks() -> None:
    """Wait for every scoring-shape check under way (benchmarks, before they time)."""
    for thread in list(_running_checks):
        thread.join(timeout=60)


@atexit.register
def _stop_scoring_checks() -> None:
    _exiting.set()
    settle_scoring_checks()


class VerifiedShapes:
    """The batch shapes at which one compiled scorer gives every row, bit for bit, the
    output its reference shape gives.

    XLA and oneDNN pick kernels by batch size, and different kernels round differently: on
    this CPU a small Seq2Seq decoder agrees with its 64-row shape at 64, 256 and 1024 rows
    but not below 64, while a wider one agrees from 8 rows up. So the shapes are not
    assumed: before a shape is first used, probe rows (fixed uniform noise in the input's
    shape) are scored at it and at the reference shape, and the shape is used only if every
    output of every row is identical. Scores stay batch-invariant, and each call pays only
    for the smallest agreeing shape that holds its rows.

    A check compiles the shape (about a second on a CPU), so it runs in a background thread,
    once calls have wanted the shape a few times: until it has passed, calls use shapes
    already known to agree (the reference always does), and a live stream never waits for a
    compilation, nor a one-off call pays for one it will not use again.
    """

    def __init__(self, fn: Any, reference: int, instance: tuple[int, ...], dtype: Any) -> None:
        self.fn = fn
        self.reference = reference
        self.instance = instance
        self.dtype = np.dtype(dtype)
        self.agrees: dict[int, bool] = {reference: True}
        self._probe = np.empty((0, *instance), self.dtype)
        self._probe_reference: tuple[np.ndarray, ...] = ()
        self._lock = threading.Lock()
        self.wanted: dict[int, int] = {}
        self._queued: list[int] = []
        self._worker: threading.Thread | None = None

    def candidates(self, max_rows: int | None) -> list[int]:
        """Shapes not known to disagree, smallest first; never empty (the reference
        shape serves when no smaller one agrees, whatever ``max_rows`` asks)."""
        shapes = sorted({*SCORING_SHAPES, self.reference})
        usable = [
            s for s in shapes if self.agrees.get(s, True) and (max_rows is None or s <= max_rows)
        ]
        return usable or [self.reference]

    def check_soon(self, shape: int) -> None:
        """Check ``shape`` in the background (once)."""
        with self._lock:
            if shape in self.agrees or shape in self._queued:
                return
            self._queued.append(shape)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._check_queued, name="scoring-shapes", daemon=True
                )
                _running_checks.add(self._worker)
                self._worker.start()

    def settle(self) -> None:
        """Wait for the checks under way."""
        worker = self._worker
        if worker is not None:
            worker.join()

    def _check_queued(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._queued or _exiting.is_set():
                        self._queued.clear()
                        self._worker = None
                        return
                    shape = self._queued[0]
                try:
                    agrees = self._check(shape)
                except Exception:  # a shape that cannot run is a shape not to use
                    agrees = False
                with self._lock:
                    self.agrees[shape] = agrees
                    self._queued.remove(shape)
        finally:
            _running_checks.discard(threading.current_thread())

    def run_at(self, shape: int, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The outputs for ``rows`` (at most ``shape``) from one call at ``shape`` rows."""
        n = len(rows)
        if n < shape:
            rows = np.concatenate([rows, np.zeros((shape - n, *rows.shape[1:]), rows.dtype)])
        out = self.fn(tf.constant(rows))
        outputs = out if isinstance(out, tuple | list) else (out,)
        return tuple(np.asarray(o.numpy())[:n] for o in outputs)

    def run_chunked(self, shape: int, rows: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Outputs of ``rows`` in calls of ``shape`` rows; None if the process began to
        exit meanwhile."""
        parts = []
        for start in range(0, len(rows), shape):
            if _exiting.is_set():
                return None
            parts.append(self.run_at(shape, rows[start : start + shape]))
        return tuple(np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))

    def _check(self, shape: int) -> bool:
        """Score the probe at ``shape`` and compare with the reference shape. The probe is
        ``reference`` distinct rows, repeated to fill a larger shape: every position of the
        larger call is compared, and the reference runs once."""
        if not self._probe_reference:
            rng = np.random.default_rng(_PROBE_SEED)
            self._probe = rng.random((self.reference, *self.instance)).astype(self.dtype)
            self._probe_reference = self.run_at(self.reference, self._probe)
        repeats = -(-shape // self.reference)
        rows = np.concatenate([self._probe] * repeats)[: max(shape, self.reference)]
        seen = self.run_chunked(shape, rows)
        if seen is None:
            return False
        return all(
            np.array_equal(a, np.concatenate([b] * repeats)[: len(a)], equal_nan=True)
            for a, b in zip(seen, self._probe_reference, strict=True)
        )


def score_at_verified_shapes(
    fn: Any,
    data: np.ndarray,
    reference: int,
    max_rows: int | None = None,
    *,
    wait_for_checks: bool = False,
) -> tuple[np.ndarray, ...]:
    """Run a compiled ``fn(batch) -> tensor | tuple of tensors`` over ``data`` and
    concatenate the outputs, every row's output bit-identical to what a call of exactly
    ``reference`` rows gives it (zero-padded where fewer).

    One shape would mean one compiled program: the kernels XLA and oneDNN pick depend on the
    batch size, and different kernels round differently, so a window scored alone and the
    same window scored among a thousand could otherwise differ in the last bits. Replays,
    alert ids and a threshold sitting exactly on a training score rely on a window always
    getting the same score. Rows of one batch never mix, so padding changes nothing. The
    calls use the shapes of :data:`SCORING_SHAPES` that :class:`VerifiedShapes` found to
    agree with ``reference``, at most ``max_rows`` rows each where given; a shape not yet
    checked is checked in the background (``wait_for_checks``: now, before it is used).

    >>> double = lambda x: 2 * x
    >>> score_at_verified_shapes(double, np.arange(5, dtype=np.float32)[:, None], 4)[0][:, 0]
    array([0., 2., 4., 6., 8.], dtype=float32)
    """
    if reference < 1:
        raise InvalidInputError(f"score_batch_size must be >= 1; got {reference}")
    if max_rows is not None and max_rows < 1:
        raise InvalidInputError(f"batch_size must be >= 1; got {max_rows}")
    instance, dtype = tuple(data.shape[1:]), data.dtype
    try:
        shapes = _verified_scorers[fn]
    except (KeyError, TypeError):  # TypeError: a plain callable that takes no weak reference
        shapes = None
    if shapes is None or (shapes.reference, shapes.instance, shapes.dtype) != (
        reference,
        instance,
        np.dtype(dtype),
    ):
        shapes = VerifiedShapes(fn, reference, instance, dtype)
        with contextlib.suppress(TypeError):
            _verified_scorers[fn] = shapes
    parts: list[tuple[np.ndarray, ...]] = []
    start = 0
    while start < len(data):
        left = len(data) - start
        shape = _next_shape(shapes, left, max_rows, wait_for_checks)
        take = min(shape, left)
        parts.append(shapes.run_at(shape, data[start : start + take]))
        start += take
    if not parts:
        return shapes.run_at(reference, data)
    return tuple(np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))


def _next_shape(shapes: VerifiedShapes, left: int, max_rows: int | None, wait: bool) -> int:
    """The shape of the next call for ``left`` rows: the smallest agreeing shape that holds
    them when its padding is at most ``max(left, _FREE_PADDING)`` rows, else the largest
    that fits in them. The best shape not yet checked is checked once it has been wanted
    ``CHECK_AFTER_WANTED`` times (in the background; at once with ``wait``); meanwhile the
    best shape known to agree serves."""
    while True:
        candidates = shapes.candidates(max_rows)
        shape = _best_shape(candidates, left)
        if shapes.agrees.get(shape):
            return shape
        shapes.wanted[shape] = shapes.wanted.get(shape, 0) + 1
        if wait or shapes.wanted[shape] >= CHECK_AFTER_WANTED:
            shapes.check_soon(shape)
        if wait:
            shapes.settle()
            continue
        known = [s for s in candidates if shapes.agrees.get(s)] or [shapes.reference]
        return _best_shape(known, left)


def _best_shape(shapes: list[int], left: int) -> int:
    holding = [s for s in shapes if s >= left]
    fitting = [s for s in shapes if s <= left]
    if holding and (not fitting or holding[0] - left <= max(left, _FREE_PADDING)):
        return holding[0]
    return fitting[-1]


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
    optimizer: keras.optimizers.Optimizer | None = None,
    variables: list[Any] | None = None,
) -> list[dict[str, float]]:
    """Run a compiled ``step(*batch) -> {loss_name: tensor}`` over shuffled mini-batches.

    Every mini-batch has the same number of rows (at most ``batch_size``; an epoch leaves
    out fewer rows than it has batches, a different random few each epoch) and the step's
    ``optimizer`` is built on ``variables`` first, so ``step`` is traced once: a partial
    last batch costs a second trace, and creating the optimizer's slots inside the first
    call a third (``tf.function`` traces a call that creates variables twice). A trace is
    seconds of CPU; a retraining pays it every time.

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
    if optimizer is not None and not optimizer.built:
        if variables is None:
            raise ValueError("train_epochs: an optimizer to build needs the variables it updates")
        optimizer.build(variables)
    batches_per_epoch = max(-(-n // batch_size), 1)
    dataset = (
        tf.data.Dataset.from_tensor_slices(arrays)
        .shuffle(max(min(n, 50_000), 1), seed=seed, reshuffle_each_iteration=True)
        .batch(max(n // batches_per_epoch, 1), drop_remainder=True)
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


class KerasDetector(Detector):
    """A detector built from Keras models.

    Subclasses implement ``_model_files`` (the models to save, by file name) and
    ``_restore`` (take them back after loading), and the math in ``fit`` / ``score``.
    """

    @abstractmethod
    def _model_files(self) -> dict[str, keras.Model]:
        """The Keras models to save, by file name (``*.keras``)."""

    @abstractmethod
    def _restore(self, models: dict[str, keras.Model]) -> None:
        """Take back the models that :meth:`_model_files` named, after loading."""

    def _metadata_extra(self) -> dict[str, Any]:
        return {"keras_version": keras.__version__}

    def _write_state(self, target: Path) -> None:
        for file_name, model in self._model_files().items():
            model.save(target / file_name)

    def _read_state(self, directory: Path) -> None:
        models: dict[str, keras.Model] = {}
        for file_name in read_metadata(directory).get("models") or {}:
            if not file_name.endswith(".keras"):
                continue
            path = directory / file_name
            try:
                models[file_name] = keras.saving.load_model(path, compile=False, safe_mode=True)
            except Exception as exc:  # Keras raises many types for a bad archive
                raise ModelLoadError(f"{path} could not be loaded by Keras: {exc}") from exc
        self._restore(models)
