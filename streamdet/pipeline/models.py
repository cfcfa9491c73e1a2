"""One topic's model: loaded from the store, or bootstrapped from a warm-up in the background.

The daemon asks :class:`TopicModel` for a detector; it never touches model math itself.
While a model trains in its thread, the topic's events keep flowing into windows (they are
counted, not scored) and other topics keep being scored.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.config import TopicConfig
from streamdet.detectors import DETECTORS, KerasDetector, load_detector
from streamdet.errors import InvalidInputError, ModelLoadError, StreamdetError
from streamdet.pipeline.history import RecentHistory
from streamdet.pipeline.model_store import ModelStore
from streamdet.pipeline.scaling import SeriesScaler
from streamdet.progress import ProgressFn
from streamdet.windows import sliding_windows

CALIBRATION_SCORES = 5000
TRAINING_OUTCOMES = ("bootstrap", "promoted", "rejected", "failed")
CALIBRATION_BUDGET = 20_000
MIN_SERIES_CALIBRATION = 100


def calibration_sample(scores: np.ndarray, limit: int = CALIBRATION_SCORES) -> list[float]:
    """Training scores that label-free policies (``spot``...) start from.

    The last ``limit`` in stream order (``dspot`` reads their order), at six significant
    digits: enough for a tail fit, small enough for ``metadata.json``.

    >>> calibration_sample(np.array([1.23456789, 2.0]))
    [1.23457, 2.0]
    """
    tail = np.asarray(scores, dtype=np.float64)[-limit:]
    return [float(f"{value:.6g}") for value in tail if np.isfinite(value)]


def calibration_by_series(scores: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Each series' own training scores, while the topic has few enough series.

    A pooled tail belongs to the noisiest series: its false-alarm rate would be the pooled
    rate times the number of series. Each series keeps up to ``CALIBRATION_BUDGET`` divided
    by the number of series, and none is kept once that share drops below
    ``MIN_SERIES_CALIBRATION`` (a tail fit needs the scores).
    """
    share = CALIBRATION_BUDGET // max(len(scores), 1)
    if share < MIN_SERIES_CALIBRATION:
        return {}
    return {series: calibration_sample(values, share) for series, values in scores.items()}


def calibration_scores(
    detector: KerasDetector,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The pooled and per-series scores kept with the model (empty for older models)."""
    pooled = detector.training.get("calibration_scores")
    by_series = detector.training.get("calibration_by_series") or {}
    return (
        None if not pooled else np.asarray(pooled, dtype=np.float64),
        {series: np.asarray(values, np.float64) for series, values in by_series.items()},
    )


class RetrainingCancelled(StreamdetError):
    """A retraining stopped because the daemon is stopping."""


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


class TopicModel:
    """States: ``warming`` (collecting), ``training``, ``ready``, ``failed``.

    A training that fails for any reason (bad ``params``, a full disk, a bug) marks the
    topic ``failed`` with the reason and is tried again after a backoff that doubles up to
    ``MAX_RETRY_S``; the warm-up data is kept for that.
    """

    MAX_RETRY_S = 900.0

    def __init__(
        self,
        topic: TopicConfig,
        store: Path,
        n_features: int,
        progress: ProgressFn,
        keep_versions: int = 5,
    ):
        self.topic = topic
        self.directory = Path(topic.detector.model_dir or store / topic.name)
        self.store = ModelStore(self.directory, keep=keep_versions)
        self.n_features = n_features
        self.progress = progress
        self.detector: KerasDetector | None = None
        self.version: str | None = None  # the store version serving, once one does
        self.reloads = 0
        self._refused_version: str | None = None
        self._reload_thread: threading.Thread | None = None
        self._reloaded: tuple[str, KerasDetector] | None = None
        retrain = topic.retrain
        self.history = (
            RecentHistory(retrain.history_events, topic.max_series) if retrain.enabled else None
        )
        self.retraining = False
        self.events_since_training = 0
        self.outcomes = {"promoted": 0, "rejected": 0, "failed": 0}
        self._retrain_thread: threading.Thread | None = None
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
        self.training_events = 0
        self.trained_here = False
        self.failures = 0
        self.load_refusals = 0
        self.retry_at: float | None = None
        self._training_data: dict[str, np.ndarray] | None = None
        self._warmup: dict[str, list[np.ndarray]] = {}
        self._offered: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._try_load()

    @property
    def tabular(self) -> bool:
        """Tabular and image topics score one message at a time (a window of one)."""
        return self.topic.kind in ("tabular", "image")

    @property
    def instance_shape(self) -> tuple[int, ...]:
        if self.topic.kind == "image":
            return tuple(self.topic.format.image_shape or ())
        if self.tabular:
            return (self.n_features,)
        return (self.seq_len, self.n_features)

    def instances(self, windows: np.ndarray) -> np.ndarray:
        """What the detector scores: windows, rows (tabular) or images."""
        if not self.tabular:
            return windows
        return windows[:, 0, :].reshape(len(windows), *self.instance_shape)

    @property
    def seq_len(self) -> int:
        """Events per scored instance for this topic's detector (1: a tabular row)."""
        if self.tabular:
            return 1
        detector_class = DETECTORS[self.topic.detector.name]
        return detector_class.context_length(self.topic.detector.params, self.topic.window.seq_len)

    def _load_version(self, version: str) -> KerasDetector:
        """Load and check one stored version; raises if it cannot serve this topic."""
        path = self.store.path_of(version)
        detector = load_detector(path, self.topic.detector.name, self.instance_shape)
        if detector.threshold is None:
            raise ModelLoadError(
                f"{path}: the model has no threshold (infer_threshold was never run); "
                "the daemon would never alert"
            )
        names = detector.params.get("feature_names")
        if (
            self.topic.kind == "tabular"
            and names is not None
            and list(names) != list(self.feature_names)
        ):
            raise ModelLoadError(
                f"{path}: the model reads features {names}, but the topic's "
                f"value_fields are {list(self.feature_names)}"
            )
        return detector

    def _serve(self, version: str, detector: KerasDetector) -> None:
        if self.scaler is not None:
            self.scaler.load(detector.training.get("series_scaling"))
        self.detector = detector
        self.version = version
        self.events_since_training = 0
        self.training_events = int(detector.training.get("training_events", 0))
        self._warmup = {}
        self.state = "ready"

    def _try_load(self) -> None:
        version = self.store.current()
        if version is None:
            return
        try:
            detector = self._load_version(version)
        except Exception as exc:  # a refused or broken model is never half-loaded
            self._refused_version = version
            self.load_refusals += 1
            self.progress(
                f"topic {self.topic.name}: stored model {version} refused "
                f"({type(exc).__name__}: {exc}); training a new one from the stream"
            )
            return
        self._serve(version, detector)
        self.progress(f"topic {self.topic.name}: loaded model {version} from {self.directory}")

    def check_store(self) -> None:
        """Start loading the store's current version if it is not the one serving.

        The version may come from ``streamdet train``, ``models promote``/``rollback``, or
        another replica sharing the store. It loads in a thread; :meth:`apply_reload` swaps
        it in from the loop, between batches, so no window is scored twice or skipped. A
        version that cannot be loaded is refused once (logged and counted) and the serving
        model carries on.
        """
        if (
            self.state == "training"
            or self.retraining
            or self._reload_thread is not None
            or self._reloaded
        ):
            return
        current = self.store.current()
        if current is None or current in (self.version, self._refused_version):
            return

        def load() -> None:
            try:
                self._reloaded = (current, self._load_version(current))
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

    def apply_reload(self) -> bool:
        """Serve a version :meth:`check_store` loaded; True if the model changed."""
        loaded, self._reloaded = self._reloaded, None
        if loaded is None:
            return False
        previous = self.version
        self._serve(*loaded)
        self.reloads += 1
        self.progress(f"topic {self.topic.name}: now serving model {self.version} (was {previous})")
        return True

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.topic.format.value_fields

    @property
    def ready(self) -> bool:
        return self.state == "ready"

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

    def _start_training(self) -> None:
        self.state = "training"
        self.retry_at = None
        self._thread = threading.Thread(
            target=self._train, name=f"train-{self.topic.name}", daemon=True
        )
        self._thread.start()

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
        except Exception as exc:  # any failure: reported and retried, never a stuck topic
            self.failures += 1
            first = self.topic.detector.retry_after_s
            delay = min(first * 2 ** (self.failures - 1), self.MAX_RETRY_S)
            self.error = f"{type(exc).__name__}: {exc}"
            self.retry_at = time.monotonic() + delay
            self.state = "failed"
            self.progress(
                f"topic {self.topic.name}: training failed ({self.error}); retry in {delay:.0f}s"
            )

    def scaled(self, series: list[str], windows: np.ndarray) -> np.ndarray:
        """Windows (batch, T, F) in each series' own units (per-series normalisation)."""
        if self.scaler is None:
            return windows
        return np.stack([self.scaler.transform(s, w) for s, w in zip(series, windows, strict=True)])

    def _windows(
        self,
        runs: dict[str, list[np.ndarray]],
        scaling: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Instances of every run long enough for a window, and how many each series gave;
        with ``scaling`` (per-series mean and std) each series is standardised first."""
        per_series: dict[str, list[np.ndarray]] = {}
        for name, pieces in runs.items():
            if scaling is not None and name in scaling:
                mean, std = (np.asarray(v, np.float64) for v in scaling[name])
                pieces = [((p - mean) / std).astype(np.float32) for p in pieces]
            cut = [sliding_windows(p, self.seq_len) for p in pieces if len(p) >= self.seq_len]
            if cut:
                per_series[name] = cut
        if not per_series:
            raise StreamdetError(
                f"topic {self.topic.name}: no series has the {self.seq_len} events one "
                "window needs; collect more data"
            )
        windows = np.concatenate([w for cut in per_series.values() for w in cut])
        counts = {name: sum(len(w) for w in cut) for name, cut in per_series.items()}
        return self.instances(windows), counts

    def _new_detector(self) -> KerasDetector:
        detector_class = DETECTORS[self.topic.detector.name]
        params: dict[str, Any] = {**detector_class.tuned_params, **self.topic.detector.params}
        if self.topic.kind == "tabular":
            params["feature_names"] = list(self.feature_names)
        try:
            return detector_class(**params)
        except (TypeError, InvalidInputError) as exc:
            raise StreamdetError(
                f"topic {self.topic.name}: detector.params does not fit "
                f"{self.topic.detector.name}: {exc}"
            ) from None

    def _calibrate(
        self, detector: KerasDetector, windows: np.ndarray, counts: dict[str, int], events: int
    ) -> None:
        """Threshold (plus margin) and the calibration scores kept with the model."""
        perc = self.topic.threshold.threshold_perc
        detector.infer_threshold(windows, threshold_perc=perc, **detector.stream_threshold_kwargs)
        margin = self.topic.threshold.margin_perc / 100.0
        if margin:
            # Scores just past the warm-up's highest are the normal data's own tail: a margin
            # keeps them quiet without hiding scores that are clearly beyond it.
            threshold = np.asarray(detector.threshold, dtype=np.float64)
            detector.threshold = threshold + margin * np.abs(threshold)
            if detector.threshold.ndim == 0:
                detector.threshold = float(detector.threshold)
        detector.training["training_events"] = events
        scores = detector.score(windows).instance_score
        detector.training["calibration_scores"] = calibration_sample(scores)
        bounds = np.cumsum([0, *counts.values()])
        detector.training["calibration_by_series"] = calibration_by_series(
            {name: scores[a:b] for name, a, b in zip(counts, bounds[:-1], bounds[1:], strict=True)}
        )

    def train(self, series: dict[str, np.ndarray]) -> KerasDetector:
        """Fit, infer the threshold and save a model from per-series arrays (T, F), now."""
        scaling = None if self.scaler is None else SeriesScaler(1).fit(series)
        windows, counts = self._windows({k: [v] for k, v in series.items()}, scaling)
        self.state = "training"
        started = time.perf_counter()
        events = sum(len(series[k]) for k in counts)
        self.progress(
            f"topic {self.topic.name}: training {self.topic.detector.name} on "
            f"{events} events from {len(counts)} series"
        )
        detector = self._new_detector()
        detector.fit(windows, progress=self.progress)
        self._calibrate(detector, windows, counts, events)
        if scaling is not None:
            detector.training["series_scaling"] = scaling
        with self.store.writing() as (version, folder):
            detector.training["store_version"] = version
            detector.save(folder)
        self._serve(version, detector)
        self.trained_here = True
        self.progress(
            f"topic {self.topic.name}: model {version} ready in "
            f"{time.perf_counter() - started:.1f}s, saved to {folder.parent / version}"
        )
        return detector

    # ---- continual learning -------------------------------------------------------------
    def observe(self, series: str, timestamp_ms: int, values: np.ndarray) -> None:
        """Keep an event seen after the warm-up for later retrainings (only with a
        ``retrain`` policy) and follow the running scale of series the model does not know."""
        if self.scaler is not None:
            self.scaler.observe(series, values)
        if self.history is None or self.state == "warming":
            return
        self.history.add(series, timestamp_ms, values)
        self.events_since_training += 1
        self._latest_event_ms = max(self._latest_event_ms or timestamp_ms, timestamp_ms)
        if self._trained_at_event_ms is None:
            self._trained_at_event_ms = timestamp_ms

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
        runs = self.history.normal_runs(self.seq_len)
        self.retraining = True
        self.events_since_training = 0
        self._trained_at_event_ms = self._latest_event_ms
        self._retrain_thread = threading.Thread(
            target=self._retrain_safely,
            args=(runs, reason),
            name=f"retrain-{self.topic.name}",
            daemon=True,
        )
        self._retrain_thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel a running retraining (at its next epoch) and wait for it to end."""
        self._stopping.set()
        if self._retrain_thread is not None:
            self._retrain_thread.join(timeout)

    def _retrain_progress(self, message: str) -> None:
        if self._stopping.is_set():
            raise RetrainingCancelled("the daemon is stopping")
        self.progress(message)

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

    def retrain(self, runs: dict[str, list[np.ndarray]], reason: str = "manual") -> str:
        """Fit a candidate on recent normal history, compare it in shadow, store it.

        Returns the outcome, ``promoted`` or ``rejected``. A promoted candidate is handed to
        the loop like a reloaded version (:meth:`apply_reload`), so it starts serving between
        two batches.
        """
        assert self.version is not None
        policy = self.topic.retrain
        started = time.perf_counter()
        fit_runs: dict[str, list[np.ndarray]] = {}
        shadow_runs: dict[str, list[np.ndarray]] = {}
        for name, pieces in runs.items():
            total = sum(len(p) for p in pieces)
            keep = total - int(total * policy.holdout)
            fit_runs[name], shadow_runs[name], seen = [], [], 0
            for piece in pieces:
                cut = min(max(keep - seen, 0), len(piece))
                fit_runs[name].append(piece[:cut])
                shadow_runs[name].append(piece[cut:])
                seen += len(piece)
        scaling = serving_scaling = None
        if self.scaler is not None:
            fit_arrays = {k: np.concatenate(v) for k, v in fit_runs.items() if v}
            scaling = SeriesScaler(1).fit({k: v for k, v in fit_arrays.items() if len(v)})
            assert self.detector is not None
            serving_scaling = {**scaling, **(self.detector.training.get("series_scaling") or {})}
        windows, counts = self._windows(fit_runs, scaling)
        shadow, _ = self._windows(shadow_runs, scaling)
        serving_shadow, _ = self._windows(shadow_runs, serving_scaling)
        path = self.store.path_of(self.version)
        serving = load_detector(path, self.topic.detector.name, self.instance_shape)
        warm = type(serving).warm_start
        candidate = (
            load_detector(path, self.topic.detector.name, self.instance_shape)
            if warm
            else self._new_detector()
        )
        events = sum(len(p) for name in counts for p in fit_runs[name])
        self.progress(
            f"topic {self.topic.name}: retraining ({reason}) on {events} recent events of "
            f"{len(counts)} series, {'from ' + self.version if warm else 'from scratch'}"
        )
        candidate.fit(
            windows,
            progress=self._retrain_progress,
            **({"epochs": policy.epochs} if policy.epochs else {}),
        )
        self._calibrate(candidate, windows, counts, events)
        if scaling is not None:
            candidate.training["series_scaling"] = scaling
        serving_rate = float(np.mean(serving.predict(serving_shadow)["data"]["is_outlier"]))
        candidate_rate = float(np.mean(candidate.predict(shadow)["data"]["is_outlier"]))
        promote = should_promote(candidate_rate, serving_rate, policy.max_false_alarm_rate)
        outcome = "promoted" if promote else "rejected"
        candidate.training["retraining"] = {
            "reason": reason,
            "from": self.version if warm else None,
            "shadow_windows": len(shadow),
            "false_alarm_rate": candidate_rate,
            "serving_false_alarm_rate": serving_rate,
            "outcome": outcome,
        }
        with self.store.writing(promote=promote) as (version, folder):
            candidate.training["store_version"] = version
            candidate.save(folder)
        self.outcomes[outcome] += 1
        self.progress(
            f"topic {self.topic.name}: candidate {version} {outcome} in "
            f"{time.perf_counter() - started:.1f}s (false alarms on {len(shadow)} recent "
            f"windows: {candidate_rate:.2%} vs {serving_rate:.2%} for {self.version})"
        )
        if promote:
            self._reloaded = (version, candidate)
        return outcome

    def wait(self, timeout: float | None = None) -> None:
        """Block until a running training finishes (used at shutdown and in tests)."""
        for thread in (self._thread, self._retrain_thread):
            if thread is not None:
                thread.join(timeout)
