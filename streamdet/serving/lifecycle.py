"""One topic's model over its life: loaded from the store or bootstrapped from a warm-up,
retrained from the stream, compared in shadow with the topic's own threshold rule,
swapped in between two batches.

The daemon asks :class:`ModelLifecycle` for a :class:`ServingBundle`; it never touches model
math itself. While a model trains in its thread, the topic's events keep flowing into windows
(they wait, they are not scored) and other topics keep being scored.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.config import TopicConfig
from streamdet.core.backoff import Backoff
from streamdet.core.errors import InvalidInputError, ModelLoadError, StreamdetError
from streamdet.core.progress import ProgressFn
from streamdet.core.tensorflow import announce_scoring_device
from streamdet.core.windows import sliding_windows
from streamdet.detectors import detector_class
from streamdet.detectors.base import Detector
from streamdet.serving.bundle import ServingBundle, calibration_from_scores
from streamdet.serving.history import RecentHistory
from streamdet.serving.scaling import SeriesScaler
from streamdet.serving.store import ModelStore
from streamdet.thresholds import Calibration, decide_series

TRAINING_OUTCOMES = ("bootstrap", "promoted", "rejected", "failed")
STATES = ("warming", "training", "ready", "failed")


class RetrainingCancelled(StreamdetError):
    """A training stopped because the daemon is stopping."""


def should_promote(candidate_rate: float, serving_rate: float, tolerated_rate: float) -> bool:
    """The promotion rule: a retrained model replaces the serving one unless it raises more
    false alarms on the same recent normal windows than both the serving model and the
    tolerated rate.

    >>> should_promote(0.0, 0.27, 0.01), should_promote(0.005, 0.0, 0.01)
    (True, True)
    >>> should_promote(0.05, 0.02, 0.01)
    False
    """
    return candidate_rate <= max(serving_rate, tolerated_rate)


class TopicShape:
    """What one scored instance of a topic is: a window of ``seq_len`` events (time
    series), or a single event (a tabular row or an image)."""

    def __init__(self, topic: TopicConfig, n_features: int) -> None:
        self.topic = topic
        self.n_features = n_features
        self.one_event_per_instance = topic.kind in ("tabular", "image")
        self.seq_len = (
            1
            if self.one_event_per_instance
            else detector_class(topic.detector.name).context_length(
                topic.detector.params, topic.window.seq_len
            )
        )

    @property
    def instance_shape(self) -> tuple[int, ...]:
        if self.topic.kind == "image":
            return tuple(self.topic.format.image_shape or ())
        if self.one_event_per_instance:
            return (self.n_features,)
        return (self.seq_len, self.n_features)

    def instances(self, windows: np.ndarray) -> np.ndarray:
        """What the detector scores: windows, rows (tabular) or images."""
        if not self.one_event_per_instance:
            return windows
        return windows[:, 0, :].reshape(len(windows), *self.instance_shape)


class ModelLifecycle:
    """States: ``warming`` (collecting), ``training``, ``ready``, ``failed``.

    A training that fails for any reason (bad ``params``, a full disk, a bug) marks the
    topic ``failed`` with the reason and is tried again after a backoff that doubles up to
    ``MAX_RETRY_S``; the warm-up data is kept for that. ``synchronous`` (replays): every
    training runs in the caller's thread, so a replay does not depend on the machine's speed.
    """

    MAX_RETRY_S = 900.0

    def __init__(
        self,
        topic: TopicConfig,
        store: Path,
        n_features: int,
        progress: ProgressFn,
        keep_versions: int = 5,
        synchronous: bool = False,
    ):
        self.topic = topic
        self.shape = TopicShape(topic, n_features)
        self.directory = Path(topic.detector.model_dir or store / topic.name)
        self.store = ModelStore(self.directory, keep=keep_versions)
        self.progress = progress
        self.synchronous = synchronous
        self.bundle: ServingBundle | None = None
        self.reloads = 0
        self._refused_version: str | None = None
        self._store_problem: str | None = None
        self._reload_thread: threading.Thread | None = None
        self._reloaded: ServingBundle | None = None
        retrain = topic.retrain
        self.history = (
            RecentHistory(retrain.history_events, topic.max_series) if retrain.enabled else None
        )
        self.retraining = False
        self.events_since_training = 0
        self.outcomes = dict.fromkeys(TRAINING_OUTCOMES, 0)
        self._stopping = threading.Event()
        self.scaler = (
            SeriesScaler(topic.max_series)
            if topic.window.normalise == "per_series" and topic.kind == "timeseries"
            else None
        )
        self._latest_event_ms: int | None = None
        self._trained_at_event_ms: int | None = None
        self.state = "warming"
        self.error: str | None = None
        self.failures = 0
        self.load_refusals = 0
        self.retry_at: float | None = None
        self._retry = Backoff(topic.detector.retry_after_s, self.MAX_RETRY_S)
        self._training_data: dict[str, np.ndarray] | None = None
        self._warmup: dict[str, list[np.ndarray]] = {}
        self._offered: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._try_load()

    # ---- what serves ---------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def detector(self) -> Detector | None:
        return None if self.bundle is None else self.bundle.detector

    @property
    def version(self) -> str | None:
        """The store version serving, once one does."""
        return None if self.bundle is None else self.bundle.version

    @property
    def seq_len(self) -> int:
        return self.shape.seq_len

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.topic.format.value_fields

    def scaled(self, series: list[str], windows: np.ndarray) -> np.ndarray:
        """Windows (batch, T, F) in each series' own units (per-series normalisation)."""
        if self.scaler is None:
            return windows
        return np.stack([self.scaler.transform(s, w) for s, w in zip(series, windows, strict=True)])

    def _load_version(self, version: str) -> ServingBundle:
        """Load and check one stored version; raises if it cannot serve this topic."""
        path = self.store.path_of(version)
        bundle = ServingBundle.load(
            path, self.topic.detector.name, self.shape.instance_shape, version=version
        )
        names = bundle.detector.params.get("feature_names")
        if (
            self.topic.kind == "tabular"
            and names is not None
            and list(names) != list(self.feature_names)
        ):
            raise StreamdetError(
                f"{path}: the model reads features {names}, but the topic's "
                f"value_fields are {list(self.feature_names)}"
            )
        self._warm_up(bundle.detector)
        return bundle

    def _serve(self, bundle: ServingBundle) -> None:
        if self.scaler is not None:
            self.scaler.load(bundle.series_scaling)
        self.bundle = bundle
        self.events_since_training = 0
        self._warmup = {}
        self.state = "ready"
        announce_scoring_device(self.progress)

    def _current_version(self) -> str | None:
        """The store's current version; None (reported once, counted as a refusal) while
        ``CURRENT`` cannot be read: the serving model carries on."""
        try:
            current = self.store.current()
        except ModelLoadError as exc:
            if str(exc) != self._store_problem:
                self._store_problem = str(exc)
                self.load_refusals += 1
                self.progress(f"topic {self.topic.name}: {exc}; still serving {self.version}")
            return None
        self._store_problem = None
        return current

    def _try_load(self) -> None:
        version = self._current_version()
        if version is None:
            return
        try:
            bundle = self._load_version(version)
        except Exception as exc:  # a refused or broken model is never half-loaded
            self._refused_version = version
            self.load_refusals += 1
            self.progress(
                f"topic {self.topic.name}: stored model {version} refused "
                f"({type(exc).__name__}: {exc}); training a new one from the stream"
            )
            return
        self._serve(bundle)
        self.progress(f"topic {self.topic.name}: loaded model {version} from {self.directory}")

    # ---- the store changes: train, promote, rollback, another replica --------------------
    def check_store(self) -> None:
        """Start loading the store's current version if it is not the one serving.

        It loads in a thread; :meth:`apply_reload` swaps it in from the loop, between
        batches, so no window is scored twice or skipped. A version that cannot be loaded is
        refused once (logged and counted) and the serving model carries on.
        """
        if (
            self.state == "training"
            or self.retraining
            or self._reload_thread is not None
            or self._reloaded
        ):
            return
        current = self._current_version()
        if current is None or current in (self.version, self._refused_version):
            return

        def load() -> None:
            try:
                self._reloaded = self._load_version(current)
            except Exception as exc:  # refused: the serving model stays
                self._refused_version = current
                self.load_refusals += 1
                self.progress(
                    f"topic {self.topic.name}: model {current} refused "
                    f"({type(exc).__name__}: {exc}); still serving {self.version}"
                )
            finally:
                self._reload_thread = None

        self._reload_thread = threading.Thread(
            target=load, name=f"reload-{self.topic.name}", daemon=True
        )
        self._reload_thread.start()

    @property
    def loading(self) -> bool:
        """A stored version is being loaded in the background (see :meth:`check_store`)."""
        return self._reload_thread is not None

    def apply_reload(self) -> bool:
        """Serve a version :meth:`check_store` loaded or a retraining promoted; True if the
        model changed."""
        loaded, self._reloaded = self._reloaded, None
        if loaded is None:
            return False
        previous = self.version
        self._serve(loaded)
        self.reloads += 1
        self.progress(f"topic {self.topic.name}: now serving model {self.version} (was {previous})")
        return True

    # ---- the first model: warm-up and training -------------------------------------------
    def offer(self, series: str, values: np.ndarray, all_partitions_seen: bool = True) -> None:
        """Collect warm-up data; train once every series seen has ``warmup_events``.

        ``all_partitions_seen`` holds training back until every assigned partition has
        delivered data, so series of a partition read later are not left out. A sparse series
        cannot stall training forever: once any series has delivered three warm-ups' worth,
        training starts with every series long enough for a window.
        """
        if self.state != "warming":
            return
        needed = self.topic.detector.warmup_events
        if series not in self._offered and len(self._offered) >= self.topic.max_series:
            return  # the warm-up keeps as many series as the topic tracks, no more
        offered = self._offered[series] = self._offered.get(series, 0) + 1
        rows = self._warmup.setdefault(series, [])
        # Exactly the first ``warmup_events`` of each series: later events are scored, never
        # trained on, however long other partitions take to deliver.
        if len(rows) < needed:
            rows.append(values)
        complete = all(len(v) >= needed for v in self._warmup.values())
        if (all_partitions_seen and complete) or offered >= 3 * needed:
            self._training_data = {k: np.stack(v) for k, v in self._warmup.items()}
            self._warmup = {}
            self._start_training()

    def _run(self, target: Any, name: str, *args: Any) -> None:
        if self.synchronous:
            target(*args)
            return
        thread = threading.Thread(
            target=target, args=args, name=f"{name}-{self.topic.name}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _start_training(self) -> None:
        self.state = "training"
        self.retry_at = None
        self._run(self._train, "train")

    def retry_if_due(self, now: float | None = None) -> bool:
        """Start the next attempt of a failed training once its backoff has passed."""
        now = time.monotonic() if now is None else now
        if self.state != "failed" or self.retry_at is None or now < self.retry_at:
            return False
        self.progress(f"topic {self.topic.name}: retrying training (attempt {self.failures + 1})")
        self._start_training()
        return True

    def _train(self) -> None:
        assert self._training_data is not None
        try:
            self.train(self._training_data)
            self._training_data = None
        except RetrainingCancelled:
            self.state = "failed"
            self.error = "cancelled: the daemon is stopping"
            self.progress(f"topic {self.topic.name}: training cancelled (stopping)")
        except Exception as exc:  # any failure: reported and retried, never a stuck topic
            self.failures += 1
            self.outcomes["failed"] += 1
            now = time.monotonic()
            delay = self._retry.failed(now)
            self.error = f"{type(exc).__name__}: {exc}"
            self.retry_at = now + delay
            self.state = "failed"
            self.progress(
                f"topic {self.topic.name}: training failed ({self.error}); retry in {delay:.0f}s"
            )

    def _windows(
        self,
        runs: dict[str, list[np.ndarray]],
        scaling: dict[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """Each series' instances from its runs long enough for a window; with ``scaling``
        (per-series mean and std) each series is standardised first."""
        per_series: dict[str, np.ndarray] = {}
        seq_len = self.shape.seq_len
        for name, pieces in runs.items():
            if scaling is not None and name in scaling:
                mean, std = (np.asarray(v, np.float64) for v in scaling[name])
                pieces = [((p - mean) / std).astype(np.float32) for p in pieces]
            cut = [sliding_windows(p, seq_len) for p in pieces if len(p) >= seq_len]
            if cut:
                per_series[name] = self.shape.instances(np.concatenate(cut))
        if not per_series:
            raise StreamdetError(
                f"topic {self.topic.name}: no series has the {seq_len} events one "
                "window needs; collect more data"
            )
        return per_series

    def _new_detector(self) -> Detector:
        detector_type = detector_class(self.topic.detector.name)
        params: dict[str, Any] = {**detector_type.tuned_params, **self.topic.detector.params}
        if self.topic.kind == "tabular":
            params["feature_names"] = list(self.feature_names)
        try:
            return detector_type(**params)
        except (TypeError, InvalidInputError) as exc:
            raise StreamdetError(
                f"topic {self.topic.name}: detector.params does not fit "
                f"{self.topic.detector.name}: {exc}"
            ) from None

    def _progress(self, message: str) -> None:
        """Training progress; raising here cancels a training at its next epoch."""
        if self._stopping.is_set():
            raise RetrainingCancelled("the daemon is stopping")
        self.progress(message)

    def _bundle(
        self,
        detector: Detector,
        windows: dict[str, np.ndarray],
        events: int,
        scaling: dict[str, Any] | None,
    ) -> ServingBundle:
        """The detector with the calibration scores of its own training windows."""
        counts = {name: len(w) for name, w in windows.items()}
        scores = detector.score(np.concatenate(list(windows.values()))).instance_score
        self._warm_up(detector)
        return ServingBundle(detector, calibration_from_scores(scores, counts), scaling, events)

    def _warm_up(self, detector: Detector) -> None:
        """Compile the small scoring shapes in the thread that trained or loaded the model,
        not while the first live windows wait (a replay waits for nothing: it skips this)."""
        if self.synchronous:
            return
        try:
            detector.warm_up()
        except Exception as exc:  # the first windows compile it instead
            self.progress(f"topic {self.topic.name}: warming the model up failed: {exc}")

    def train(self, series: dict[str, np.ndarray]) -> ServingBundle:
        """Fit, calibrate and save a model from per-series arrays (T, F), now."""
        scaling = None if self.scaler is None else SeriesScaler(1).fit(series)
        windows = self._windows({k: [v] for k, v in series.items()}, scaling)
        self.state = "training"
        started = time.perf_counter()
        events = sum(len(series[k]) for k in windows)
        self.progress(
            f"topic {self.topic.name}: training {self.topic.detector.name} on "
            f"{events} events from {len(windows)} series"
        )
        detector = self._new_detector()
        detector.fit(np.concatenate(list(windows.values())), progress=self._progress)
        bundle = self._bundle(detector, windows, events, scaling)
        with self.store.writing() as (version, folder):
            bundle.version = version
            bundle.save(folder)
        self._serve(bundle)
        self.outcomes["bootstrap"] += 1
        self.progress(
            f"topic {self.topic.name}: model {version} ready in "
            f"{time.perf_counter() - started:.1f}s, saved to {folder.parent / version}"
        )
        return bundle

    # ---- continual learning -------------------------------------------------------------
    def observe(
        self, series: str, timestamp_ms: int, values: np.ndarray, learn: bool = True
    ) -> None:
        """Keep an event seen after the warm-up for later retrainings (only with a
        ``retrain`` policy and ``learn``: a series that has filled a window, so that names a
        producer invents cost no history) and follow the running scale of series the model
        does not know."""
        if self.scaler is not None:
            self.scaler.observe(series, values)
        if self.history is None or self.state == "warming" or not learn:
            return
        self.history.add(series, timestamp_ms, values)
        self.events_since_training += 1
        self._latest_event_ms = max(self._latest_event_ms or timestamp_ms, timestamp_ms)
        if self._trained_at_event_ms is None:
            self._trained_at_event_ms = timestamp_ms

    def state_bytes(self) -> int:
        """Memory of the per-series state kept here: retraining history, running scales."""
        history = 0 if self.history is None else self.history.state_bytes(self.shape.n_features)
        scales = 0 if self.scaler is None else self.scaler.state_bytes()
        return history + scales

    def forget(self, series: str) -> None:
        """The topic no longer tracks ``series``: its history and running scale go too."""
        if self.history is not None:
            self.history.forget(series)
        if self.scaler is not None:
            self.scaler.forget(series)

    def exclude(self, series: str, start_ms: int, end_ms: int) -> None:
        """A flagged window's events (alerted, or held back by the cooldown) are never
        learnt as normal."""
        if self.history is not None:
            self.history.exclude(series, start_ms, end_ms)

    def retrain_due(self, drift: float | None) -> str | None:
        """Why a retraining should start now (``events``, ``time``, ``drift``), or None."""
        policy = self.topic.retrain
        if (
            self.history is None
            or not self.ready
            or self.retraining
            or self.events_since_training < max(policy.min_events_between, 1)
        ):
            return None
        if policy.every_events is not None and self.events_since_training >= policy.every_events:
            return "events"
        if (
            policy.every_s is not None
            and self._latest_event_ms is not None
            and self._trained_at_event_ms is not None
            and self._latest_event_ms - self._trained_at_event_ms >= policy.every_s * 1000
        ):
            return "time"
        if policy.on_drift is not None and drift is not None and drift >= policy.on_drift:
            return "drift"
        return None

    def start_retraining(self, reason: str) -> None:
        assert self.history is not None
        runs = self.history.normal_runs(self.shape.seq_len)
        self.retraining = True
        self.events_since_training = 0
        self._trained_at_event_ms = self._latest_event_ms
        self._run(self._retrain_safely, "retrain", runs, reason)

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel a running training or retraining (at its next epoch) and wait for it."""
        self._stopping.set()
        self.wait(timeout)

    def _retrain_safely(self, runs: dict[str, list[np.ndarray]], reason: str) -> None:
        try:
            self.retrain(runs, reason)
        except RetrainingCancelled:
            self.progress(f"topic {self.topic.name}: retraining cancelled (stopping)")
        except Exception as exc:  # the serving model carries on; the next trigger retries
            self.outcomes["failed"] += 1
            self.progress(
                f"topic {self.topic.name}: retraining failed ({type(exc).__name__}: {exc}); "
                f"still serving {self.version}"
            )
        finally:
            self.retraining = False

    def false_alarm_rate(self, bundle: ServingBundle, windows: dict[str, np.ndarray]) -> float:
        """The share of ``windows`` (normal by assumption: flagged spans are excluded) that
        the topic's own threshold rule flags when ``bundle`` serves: the daemon's decision,
        each series from a fresh rule, without the cooldown."""
        flagged = total = 0
        for series, instances in windows.items():
            scores = bundle.detector.score(instances).instance_score
            decisions = decide_series(self.topic.threshold, bundle.calibration, scores, series)
            flagged += sum(d.flagged for d in decisions)
            total += len(decisions)
        return flagged / max(total, 1)

    def _split_holdout(
        self, runs: dict[str, list[np.ndarray]]
    ) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
        """Each series' runs cut at its last ``holdout`` share of events."""
        fit_runs: dict[str, list[np.ndarray]] = {}
        shadow_runs: dict[str, list[np.ndarray]] = {}
        for name, pieces in runs.items():
            total = sum(len(p) for p in pieces)
            keep = total - int(total * self.topic.retrain.holdout)
            fit_runs[name], shadow_runs[name], seen = [], [], 0
            for piece in pieces:
                cut = min(max(keep - seen, 0), len(piece))
                fit_runs[name].append(piece[:cut])
                shadow_runs[name].append(piece[cut:])
                seen += len(piece)
        return fit_runs, shadow_runs

    def retrain(self, runs: dict[str, list[np.ndarray]], reason: str = "manual") -> str:
        """Fit a candidate on recent normal history, compare it in shadow, store it.

        Returns the outcome, ``promoted`` or ``rejected``. A promoted candidate is handed to
        the loop like a reloaded version (:meth:`apply_reload`), so it starts serving between
        two batches.
        """
        serving = self.bundle
        assert serving is not None
        policy = self.topic.retrain
        started = time.perf_counter()
        fit_runs, shadow_runs = self._split_holdout(runs)
        scaling = serving_scaling = None
        if self.scaler is not None:
            fit_arrays = {k: np.concatenate(v) for k, v in fit_runs.items() if v}
            scaling = SeriesScaler(1).fit({k: v for k, v in fit_arrays.items() if len(v)})
            serving_scaling = {**scaling, **(serving.series_scaling or {})}
        windows = self._windows(fit_runs, scaling)
        shadow = self._windows(shadow_runs, scaling)
        serving_shadow = self._windows(shadow_runs, serving_scaling)
        warm = type(serving.detector).warm_start
        path = self.store.path_of(serving.version) if serving.version else None
        candidate = (
            ServingBundle.load(path, self.topic.detector.name).detector
            if warm and path is not None
            else self._new_detector()
        )
        events = sum(len(p) for name in windows for p in fit_runs[name])
        self.progress(
            f"topic {self.topic.name}: retraining ({reason}) on {events} recent events of "
            f"{len(windows)} series, "
            f"{'from ' + str(serving.version) if warm and path else 'from scratch'}"
        )
        candidate.fit(
            np.concatenate(list(windows.values())),
            progress=self._progress,
            **({"epochs": policy.epochs} if policy.epochs else {}),
        )
        bundle = self._bundle(candidate, windows, events, scaling)
        serving_rate = self.false_alarm_rate(serving, serving_shadow)
        candidate_rate = self.false_alarm_rate(bundle, shadow)
        promote = should_promote(candidate_rate, serving_rate, policy.max_false_alarm_rate)
        outcome = "promoted" if promote else "rejected"
        shadow_windows = sum(len(w) for w in shadow.values())
        bundle.retraining = {
            "reason": reason,
            "from": serving.version if warm else None,
            "shadow_windows": shadow_windows,
            "threshold_policy": self.topic.threshold.policy,
            "false_alarm_rate": candidate_rate,
            "serving_false_alarm_rate": serving_rate,
            "outcome": outcome,
        }
        with self.store.writing(promote=promote) as (version, folder):
            bundle.version = version
            bundle.save(folder)
        self.outcomes[outcome] += 1
        self.progress(
            f"topic {self.topic.name}: candidate {version} {outcome} in "
            f"{time.perf_counter() - started:.1f}s (false alarms of the "
            f"{self.topic.threshold.policy} rule on {shadow_windows} recent windows: "
            f"{candidate_rate:.2%} vs {serving_rate:.2%} for {serving.version})"
        )
        if promote:
            self._reloaded = bundle
        return outcome

    def wait(self, timeout: float | None = None) -> None:
        """Block until running trainings finish (used at shutdown and in tests)."""
        for thread in list(self._threads):
            thread.join(timeout)


__all__ = [
    "STATES",
    "TRAINING_OUTCOMES",
    "Calibration",
    "ModelLifecycle",
    "RetrainingCancelled",
    "TopicShape",
    "should_promote",
]
