"""The daemon: one :class:`Application` wires source -> windows -> detectors -> sinks/metrics.

It holds no model math: detectors score, :class:`~streamdet.pipeline.models.TopicModel`
trains and loads, :class:`~streamdet.pipeline.policy.AlertPolicy` decides, sinks deliver,
and :class:`~streamdet.pipeline.checkpoint.Checkpoint` owns offsets and the commit order.

Delivery is at least once. Offsets are committed only after the alerts and dead letters of
everything before them are acknowledged, and the committed offset is the replay point that
lets a restarted daemon (or the member a rebalance hands a partition to) rebuild every
series' window. Windows rebuilt from replayed events are not scored again.

Nothing a message holds, and no broker or training failure, ends the loop: bad messages go
to the dead-letter sink with a reason, failed sends and commits are retried with backoff,
and a failed training is reported and retried while the other topics carry on.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.config import StreamdetConfig, TopicConfig
from streamdet.errors import ConfigError
from streamdet.metrics import Metrics, SeriesScoreExporter
from streamdet.pipeline.batcher import MicroBatcher
from streamdet.pipeline.checkpoint import Checkpoint, Unsettled
from streamdet.pipeline.decode import Event, InvalidMessage, decode_image, decode_timeseries
from streamdet.pipeline.drift import ScoreDrift
from streamdet.pipeline.models import TRAINING_OUTCOMES, TopicModel, calibration_scores
from streamdet.pipeline.policy import AlertPolicy
from streamdet.pipeline.window_store import ReadyWindow, WindowStore
from streamdet.progress import ProgressFn, stderr_progress
from streamdet.sinks.alerts import AlertSink, FanOutAlertSink, JsonLinesAlertSink, build_alert
from streamdet.sinks.dead_letter import DeadLetterSink, JsonLinesDeadLetterSink
from streamdet.sinks.scores import ScoredWindow, ScoreSink
from streamdet.sources.base import Message, Source, TopicPartition
from streamdet.sources.simulator import SensorSimulator, SimulatorSource

log = logging.getLogger("streamdet.app")


@dataclass
class TopicRuntime:
    """Everything the daemon keeps per topic."""

    config: TopicConfig
    windows: WindowStore
    model: TopicModel
    policy: AlertPolicy
    drift: ScoreDrift
    # Windows completed while the model is not ready, scored in order once it is. Bounded in
    # bytes: past the limit the topic's partitions pause instead of windows being dropped.
    backlog: deque[ReadyWindow] = field(default_factory=deque)
    backlog_bytes: int = 0
    paused: bool = False
    exported_state: str = ""
    exported_failures: int = 0
    exported_evictions: int = 0
    exported_refusals: int = 0
    exported_outcomes: dict[str, int] = field(default_factory=dict)
    exported_info: tuple[str, ...] | None = None
    windows_scored: int = 0
    counted_training: bool = False

    def queue(self, window: ReadyWindow) -> None:
        self.backlog.append(window)
        self.backlog_bytes += window.values.nbytes

    def unqueue(self) -> ReadyWindow:
        window = self.backlog.popleft()
        self.backlog_bytes -= window.values.nbytes
        return window

    def model_export_stale(self) -> bool:
        """True when the model's state or counters moved since they were last exported.

        The counters are compared too: a retry that fails between two loop turns leaves the
        state at ``failed`` as it was, yet it is one more failure to report.
        """
        return (
            self.model.state != self.exported_state
            or self.model.failures != self.exported_failures
            or self.model.load_refusals != self.exported_refusals
        )


class Application:
    """The streamdet daemon.

    ``scores`` (a :class:`ScoreSink`) sees every scored window's verdict, not only alerts.
    ``synchronous`` is for finite replays (``streamdet replay``, ``evaluate nab``): trainings
    block the loop, retraining triggers are checked after every poll and each poll's windows
    are scored before the next, so a replay's alerts do not depend on the machine's speed.

    >>> from streamdet.config import load_config_text
    >>> app = Application(load_config_text("topics: [{name: s, detector: {name: seq2seq}}]",
    ...                                    environ={}), serve_metrics=False)
    >>> sorted(app.topics)
    ['s']
    """

    def __init__(
        self,
        config: StreamdetConfig,
        *,
        source: Source | None = None,
        alert_sink: AlertSink | None = None,
        dead_letters: DeadLetterSink | None = None,
        progress: ProgressFn = stderr_progress,
        serve_metrics: bool = True,
        scores: ScoreSink | None = None,
        synchronous: bool = False,
    ) -> None:
        if not config.topics:
            raise ConfigError("config.yaml: topics: at least one topic is needed")
        self.config = config
        self.progress = progress
        self.metrics = Metrics()
        self.series_scores = SeriesScoreExporter(
            self.metrics, config.metrics.series_allowlist, config.metrics.top_k_series
        )
        self._serve_metrics = serve_metrics
        self.scores = scores
        # Replays: trainings block the loop and every batch is scored as soon as it is
        # read, so the same input gives the same alerts whatever the machine's speed.
        self._synchronous = synchronous
        store = Path(config.models.store)
        cooldown_ms = int(config.alerts.cooldown_s * 1000)
        self.topics: dict[str, TopicRuntime] = {}
        for topic in config.topics:
            n_features = (
                int(np.prod(topic.format.image_shape))
                if topic.kind == "image"
                else len(topic.format.value_fields)
            )
            model = TopicModel(
                topic, store, n_features, progress, keep_versions=config.models.keep_versions
            )
            windows = WindowStore(
                model.seq_len,
                n_features,
                1 if model.tabular else topic.window.stride,
                "accept" if model.tabular else topic.window.out_of_order,
                topic.window.lateness_ms,
                topic.max_series,
            )
            policy = AlertPolicy(topic.threshold, cooldown_ms, topic.max_series)
            drift = ScoreDrift(topic.drift_window, min(200, topic.drift_window))
            self.topics[topic.name] = TopicRuntime(topic, windows, model, policy, drift)
        self._producer: Any = None
        if source is None or alert_sink is None or dead_letters is None:
            default_source, default_alerts, default_dlq = self._default_io()
            source = source or default_source
            alert_sink = alert_sink or default_alerts
            dead_letters = dead_letters or default_dlq
        self.source = source
        self.alert_sink = alert_sink
        self.dead_letters = dead_letters
        self.checkpoint = Checkpoint(
            source,
            dead_letters,
            config.batching.commit_interval_ms / 1000,
            on_failure=lambda exc: self.metrics.commit_failures.labels(type(exc).__name__).inc(),
        )
        self._rebalances: deque[tuple[str, set[TopicPartition]]] = deque()
        source.on_rebalance(
            lambda partitions: self._rebalances.append(("revoked", partitions)),
            lambda partitions: self._rebalances.append(("assigned", partitions)),
        )
        self._init_metrics()
        self.batcher: MicroBatcher[ReadyWindow] = MicroBatcher(
            config.batching.max_batch, config.batching.max_delay_ms
        )
        # Alerts not yet acknowledged by the sink, with their windows: sent again until they
        # are, and nothing after them is committed.
        self._unpublished: list[tuple[dict[str, Any], ReadyWindow]] = []
        # Scored windows whose verdict is final once the alerts before them are acknowledged.
        self._settling: list[ReadyWindow] = []
        self._publish_failures = 0
        self._publish_retry_at = 0.0
        self._stop = False
        self._last_report = self._last_lag = time.monotonic()
        self._next_store_check = self._last_report + config.models.reload_interval_s
        self._last_loop = time.monotonic()
        self.alerts_published = 0

    def _init_metrics(self) -> None:
        for name, runtime in self.topics.items():
            # Create each topic's series at 0 so dashboards and rules see them from the start.
            detector = runtime.config.detector.name
            for counter in (
                self.metrics.events,
                self.metrics.late,
                self.metrics.skipped,
                self.metrics.replayed,
                self.metrics.training_failures,
                self.metrics.series_evicted,
                self.metrics.model_refused,
                self.metrics.model_reloads,
            ):
                counter.labels(name)
            for outcome in TRAINING_OUTCOMES:
                self.metrics.trainings.labels(name, outcome)
            self.metrics.windows.labels(name, detector)
            self.metrics.alerts.labels(name, detector)
            self.metrics.model_ready.labels(name).set(0)
            self.metrics.backlog_bytes.labels(name).set(0)
        self.metrics.broker_up.set(1)

    def _default_io(self) -> tuple[Source, AlertSink, DeadLetterSink]:
        cfg = self.config
        printed = JsonLinesAlertSink(cfg.alerts.file, echo=cfg.alerts.stdout)
        if cfg.kafka.bootstrap_servers:
            from streamdet.kafka_client import refused_connections
            from streamdet.sinks.kafka import KafkaAlertSink, KafkaDeadLetterSink, make_producer
            from streamdet.sources.kafka import KafkaSource

            with refused_connections(cfg.kafka):
                self._producer = make_producer(cfg.kafka)
            try:
                source = KafkaSource(cfg.kafka, [t.name for t in cfg.topics])
            except Exception:
                self._producer.close(timeout=1)
                raise
            alerts = FanOutAlertSink(KafkaAlertSink(self._producer, cfg.alerts.topic), printed)
            return source, alerts, KafkaDeadLetterSink(self._producer, cfg.dead_letter.topic)
        sim = cfg.simulator
        first = cfg.topics[0]
        simulator = SensorSimulator(
            sim.sensors,
            sim.period,
            sim.noise,
            sim.anomaly_every,
            sim.seed,
            first_anomaly=(
                sim.first_anomaly
                if sim.first_anomaly is not None
                else first.detector.warmup_events + sim.anomaly_every
            ),
            permanent_shift_at=sim.permanent_shift_at,
            scales=sim.scales,
        )
        source = SimulatorSource(first.name, simulator, sim.rate, sim.max_events)
        return source, printed, JsonLinesDeadLetterSink(cfg.dead_letter.file)

    # ---- lifecycle --------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current batch, publish, commit and return."""
        self._stop = True

    def run(self, install_signal_handlers: bool = True) -> int:
        """Consume until stopped (SIGTERM/SIGINT) or the source is exhausted; exit code.

        Embedders running the loop off the main thread pass ``install_signal_handlers=False``
        and call :meth:`stop` themselves.
        """
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        if self._serve_metrics:
            from streamdet.http import serve

            server = serve(self.config.metrics, self.metrics.registry, self.healthy, self.ready)
            scheme = "https" if self.config.metrics.tls_certfile else "http"
            self.progress(
                f"metrics at {scheme}://{self.config.metrics.host}:{server.server_port}/metrics "
                "(and /healthz, /readyz)"
            )
        poll_ms = self.config.batching.poll_timeout_ms
        try:
            while not self._stop:
                self._last_loop = time.monotonic()
                messages = self.source.poll(poll_ms)
                self._apply_rebalances()
                for message in messages:
                    self._handle(message)
                self._tend_models()
                self._score_if_due(force=self._synchronous)
                self._commit(force=False)
                self._report()
                if self.source.exhausted and not self._busy():
                    break
            self._tend_models(drain=True)
            self._score_if_due(force=True)
            self._commit(force=True)
        finally:
            for runtime in self.topics.values():
                # A retraining stops at its next epoch: TensorFlow must not be running in a
                # thread when the interpreter exits (it aborts the process).
                runtime.model.stop()
            self.source.close()
            if self.scores is not None:
                self.scores.close()
            if self._producer is not None:
                self._producer.close(timeout=5)
        scored = sum(runtime.windows_scored for runtime in self.topics.values())
        self.progress(
            f"stopped: {scored} window(s) scored, {self.alerts_published} alert(s) published"
        )
        return 0

    def healthy(self) -> tuple[bool, str]:
        """The loop turned recently (it polls at least every ``poll_timeout_ms``)."""
        idle = time.monotonic() - self._last_loop
        limit = max(30.0, 10 * self.config.batching.poll_timeout_ms / 1000)
        if idle > limit:
            return False, f"the consume loop has not turned for {idle:.0f}s"
        return True, "consume loop running"

    def ready(self) -> tuple[bool, str]:
        """Broker reachable, partitions assigned (Kafka) and every topic's model loaded."""
        if not self.source.connected():
            return False, "the Kafka broker cannot be reached"
        assignment = self.source.assignment()
        if assignment is not None and not assignment:
            return False, "no partitions assigned yet"
        waiting = [t for t in self.topics.values() if not t.model.ready]
        if waiting:
            states = ", ".join(f"{t.config.name}: {self._model_state(t)}" for t in waiting)
            return False, f"models not ready ({states})"
        return True, "consuming with every model loaded"

    @staticmethod
    def _model_state(runtime: TopicRuntime) -> str:
        model = runtime.model
        if model.state == "failed" and model.retry_at is not None:
            wait = max(model.retry_at - time.monotonic(), 0)
            return f"failed: {model.error} (retry in {wait:.0f}s)"
        return model.state

    def _busy(self) -> bool:
        return any(
            t.model.state == "training" or (t.model.ready and t.backlog)
            for t in self.topics.values()
        )

    # ---- rebalances ---------------------------------------------------------------------
    def _apply_rebalances(self) -> None:
        """Partitions moved to another member: drop their state (the new owner rebuilds it
        from the last commit). New partitions: their restart marks are read fresh."""
        while self._rebalances:
            kind, partitions = self._rebalances.popleft()
            self.progress(f"rebalance: {kind} {sorted(partitions)}")
            if kind == "assigned":
                self.checkpoint.assign(partitions)
                continue
            self.checkpoint.revoke(partitions)

            def gone(window: ReadyWindow, moved: set[TopicPartition] = partitions) -> bool:
                return (window.topic, window.partition) in moved

            self.batcher.remove_if(gone)
            for name, runtime in self.topics.items():
                mine = {p for t, p in partitions if t == name}
                if not mine:
                    continue
                runtime.windows.drop_partitions(mine)
                kept = [w for w in runtime.backlog if not gone(w)]
                runtime.backlog.clear()
                runtime.backlog_bytes = 0
                for window in kept:
                    runtime.queue(window)

    # ---- hot path -------------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        runtime = self.topics.get(message.topic)
        if runtime is None:
            return
        self.checkpoint.consumed(message)
        self.metrics.events.labels(message.topic).inc()
        event = self._decode(runtime, message)
        if event is None:
            return
        if not runtime.model.ready:
            runtime.model.offer(
                event.series, event.values, self._all_partitions_seen(message.topic)
            )
            if self._synchronous:
                runtime.model.wait()
        runtime.model.observe(event.series, event.timestamp_ms, event.values)
        dropped = runtime.windows.dropped_late
        now = time.monotonic()
        for window in runtime.windows.add_all(event, now):
            if self.checkpoint.already_scored(window.topic, window.partition, window.end_offset):
                self.metrics.replayed.labels(message.topic).inc()
            elif runtime.model.ready and not runtime.backlog:
                self.batcher.add(window, now)
            else:
                runtime.queue(window)
        if runtime.windows.dropped_late > dropped:
            self.metrics.late.labels(message.topic).inc()

    def _decode(self, runtime: TopicRuntime, message: Message) -> Event | None:
        topic = runtime.config
        now_ms = int(time.time() * 1000)
        try:
            if topic.kind == "image":
                shape: Any = runtime.model.instance_shape
                return decode_image(message, topic.format, shape, topic.limits, now_ms)
            return decode_timeseries(
                message, topic.format, runtime.model.tabular, topic.limits, now_ms
            )
        except InvalidMessage as exc:
            self._dead_letter(message, exc.reason, exc.detail)
        except Exception as exc:  # a decoder bug must not stop the partition either
            log.exception(
                "decoding %s/%d@%d failed", message.topic, message.partition, message.offset
            )
            self._dead_letter(message, "decode_error", f"{type(exc).__name__}: {exc}"[:300])
        return None

    def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        self.metrics.invalid.labels(message.topic, reason).inc()
        self.dead_letters.send(message, reason, detail)

    def _all_partitions_seen(self, topic: str) -> bool:
        """True when every partition of ``topic`` assigned to us has delivered data."""
        assignment = self.source.assignment()
        if assignment is None:
            return True
        # An empty assignment means "not known yet" (before the group join completes).
        mine = [key for key in assignment if key[0] == topic]
        return bool(mine) and all(self.checkpoint.seen(key) for key in mine)

    def _tend_models(self, drain: bool = False) -> None:
        """Retry failed trainings, export model states, release backlogs in slices (so the
        loop keeps polling and honours SIGTERM) and pause topics whose backlog is full."""
        now = time.monotonic()
        limit = self.config.batching.max_backlog_bytes
        check_store = now >= self._next_store_check or self._synchronous
        if check_store:
            self._next_store_check = now + self.config.models.reload_interval_s
        for name, runtime in self.topics.items():
            runtime.model.retry_if_due()
            if check_store:
                if not self._synchronous:  # a replay's store changes only through it
                    runtime.model.check_store()
                reason = runtime.model.retrain_due(runtime.drift.statistic())
                if reason is not None:
                    runtime.model.start_retraining(reason)
                    if self._synchronous:
                        runtime.model.wait()
            self._export_outcomes(name, runtime)
            if runtime.model.apply_reload():
                self.metrics.model_reloads.labels(name).inc()
                self._export_model(name, runtime)
            elif runtime.model_export_stale():
                self._export_model(name, runtime)
            if runtime.model.ready and runtime.backlog:
                everything = drain or self._synchronous
                budget = len(runtime.backlog) if everything else 4 * self.config.batching.max_batch
                while runtime.backlog and budget:
                    self.batcher.add(runtime.unqueue(), now)
                    budget -= 1
                    if self.batcher.due(now):
                        self._score_if_due(force=True)
            self.metrics.backlog_bytes.labels(name).set(runtime.backlog_bytes)
            # While warming the model needs more events, so the topic is never paused then
            # (warming ends after at most three warm-ups' worth of the busiest series).
            warming = runtime.model.state == "warming"
            if not runtime.paused and not warming and runtime.backlog_bytes > limit:
                self._pause(runtime, True)
            elif runtime.paused and runtime.backlog_bytes <= limit // 2:
                self._pause(runtime, False)
            self.metrics.series.labels(name).set(len(runtime.windows))
            evicted = runtime.windows.evicted - runtime.exported_evictions
            if evicted:
                self.metrics.series_evicted.labels(name).inc(evicted)
                runtime.exported_evictions = runtime.windows.evicted

    def _pause(self, runtime: TopicRuntime, pause: bool) -> None:
        name = runtime.config.name
        partitions = {key for key in self.checkpoint.partitions() if key[0] == name}
        assignment = self.source.assignment()
        if assignment is not None:
            partitions |= {key for key in assignment if key[0] == name}
        (self.source.pause if pause else self.source.resume)(partitions)
        runtime.paused = pause
        self.progress(
            f"topic {name}: {'pausing' if pause else 'resuming'} consumption "
            f"({runtime.backlog_bytes} bytes of windows wait for the model)"
        )

    def _score_if_due(self, force: bool) -> None:
        now = time.monotonic()
        if (force and len(self.batcher)) or self.batcher.due(now):
            batch = self.batcher.drain()
            self.metrics.batch_size.observe(len(batch))
            by_topic: dict[str, list[ReadyWindow]] = {}
            for window in batch:
                by_topic.setdefault(window.topic, []).append(window)
            for topic, windows in by_topic.items():
                self._unpublished.extend(self._score_topic(self.topics[topic], windows))
            self._settling.extend(batch)
        self._publish(force)

    def _publish(self, force: bool) -> None:
        """Send the alerts not yet acknowledged; on failure keep them and retry later."""
        now = time.monotonic()
        if not self._unpublished:
            self._settled(now)
            return
        if not force and now < self._publish_retry_at:
            return
        try:
            self.alert_sink.publish([alert for alert, _ in self._unpublished])
        except Exception as exc:  # broker away, timeout, full disk: keep, retry, never crash
            self._publish_failures += 1
            delay = min(0.5 * 2 ** (self._publish_failures - 1), 30.0)
            self._publish_retry_at = now + delay
            self.metrics.publish_failures.inc()
            log.warning(
                "publishing %d alert(s) failed (%s: %s); retrying in %.1fs",
                len(self._unpublished),
                type(exc).__name__,
                exc,
                delay,
            )
            return
        for alert, _ in self._unpublished:
            self.metrics.alerts.labels(alert["topic"], alert["detector"]).inc()
        self.alerts_published += len(self._unpublished)
        self._unpublished = []
        self._publish_failures = 0
        self._publish_retry_at = 0.0
        self._settled(time.monotonic())

    def _settled(self, now: float) -> None:
        """Every scored window's verdict is durable: observe its end-to-end latency."""
        for window in self._settling:
            self.metrics.e2e_latency.observe(now - window.received_at)
        self._settling = []

    def _score_topic(
        self, runtime: TopicRuntime, windows: list[ReadyWindow]
    ) -> list[tuple[dict[str, Any], ReadyWindow]]:
        """Score one topic's windows; the alerts they raise, with their windows."""
        detector = runtime.model.detector
        assert detector is not None
        started = time.perf_counter()
        scored = self._predict(runtime, windows)
        self.metrics.scoring_latency.observe(time.perf_counter() - started)
        name = detector.name
        topic = runtime.config.name
        threshold = np.asarray(detector.threshold, dtype=np.float64)
        self.metrics.windows.labels(topic, name).inc(len(windows))
        runtime.windows_scored += len(windows)
        self.metrics.threshold.labels(topic, name).set(float(threshold.mean()))
        pooled, by_series = calibration_scores(detector)
        runtime.policy.calibrate(detector, pooled, by_series)
        runtime.drift.reference(detector, pooled)
        alerts = []
        for window, (score, flagged, feature) in scored:
            self.metrics.score.labels(topic, name).observe(score)
            runtime.drift.observe(score)
            self.series_scores.observe(topic, window.series, score)
            verdict = runtime.policy.assess(window.series, score, flagged, window.end_ts_ms)
            if self.scores is not None:
                self.scores.record(
                    ScoredWindow(
                        topic,
                        window.series,
                        window.partition,
                        window.end_offset,
                        window.end_ts_ms,
                        score,
                        verdict.severity,
                        verdict.alert,
                        runtime.model.version,
                    )
                )
            if verdict.flagged:
                runtime.model.exclude(window.series, window.start_ts_ms, window.end_ts_ms)
            if not verdict.alert:
                continue
            series_threshold = runtime.policy.threshold_for(window.series)
            alert = build_alert(
                window,
                detector,
                score,
                threshold if series_threshold is None else np.asarray(series_threshold),
                feature,
            )
            alerts.append((alert, window))
        return alerts

    def _predict(
        self, runtime: TopicRuntime, windows: list[ReadyWindow]
    ) -> list[tuple[ReadyWindow, tuple[float, bool, np.ndarray]]]:
        """(window, (score, detector's flag, feature scores)) for every window that scores.

        If the batch fails, each window is scored alone and the ones that still fail (or
        score NaN) go to the dead-letter sink: one bad window never costs its batch.
        """
        detector = runtime.model.detector
        assert detector is not None
        try:
            return self._predict_batch(runtime, windows)
        except Exception as exc:
            if len(windows) == 1:
                self._dead_letter_window(windows[0], exc)
                return []
        results = []
        for window in windows:
            try:
                results.extend(self._predict_batch(runtime, [window]))
            except Exception as exc:
                self._dead_letter_window(window, exc)
        return results

    def _predict_batch(
        self, runtime: TopicRuntime, windows: list[ReadyWindow]
    ) -> list[tuple[ReadyWindow, tuple[float, bool, np.ndarray]]]:
        detector = runtime.model.detector
        assert detector is not None
        values = runtime.model.scaled(
            [w.series for w in windows], np.stack([w.values for w in windows])
        )
        prediction = detector.predict(runtime.model.instances(values), return_feature_score=True)
        data = prediction["data"]
        scores = np.asarray(data["instance_score"], dtype=np.float64)
        if not np.all(np.isfinite(scores)):
            bad = int(np.argmin(np.isfinite(scores)))
            raise ValueError(f"the detector scored window {bad} of the batch {scores[bad]}")
        flags = np.asarray(data[detector.outcome_key]).astype(bool)
        features = data["feature_score"]
        return [
            (w, (float(scores[i]), bool(flags[i]), np.asarray(features[i])))
            for i, w in enumerate(windows)
        ]

    def _dead_letter_window(self, window: ReadyWindow, exc: Exception) -> None:
        """A window that cannot be scored: its last message's position and why."""
        description = {
            "series": window.series,
            "window_start_offset": window.start_offset,
            "window_end_offset": window.end_offset,
        }
        message = Message(
            window.topic,
            window.partition,
            window.end_offset,
            window.series.encode("utf-8", "replace"),
            json.dumps(description).encode(),
            window.end_ts_ms,
        )
        self._dead_letter(message, "scoring_failed", f"{type(exc).__name__}: {exc}"[:300])

    def _unsettled(self) -> Unsettled:
        """Per partition, the lowest start and end offsets of windows consumed but not yet
        scored and acknowledged (in the batcher, a backlog, unpublished alerts, or events
        held for reordering)."""
        unsettled: Unsettled = {}

        def note(key: TopicPartition, start: int, end: int) -> None:
            low_start, low_end = unsettled.get(key, (start, end))
            unsettled[key] = (min(low_start, start), min(low_end, end))

        pending = [w for _, w in self._unpublished] + self.batcher.items()
        for runtime in self.topics.values():
            pending.extend(runtime.backlog)
            for partition, offset in runtime.windows.unreleased().items():
                note((runtime.config.name, partition), offset, offset)
        for window in pending:
            note((window.topic, window.partition), window.start_offset, window.end_offset)
        return unsettled

    def _commit(self, force: bool) -> None:
        if not force and not self.checkpoint.due(time.monotonic()):
            return
        replay_points: dict[TopicPartition, int] = {}
        for name, runtime in self.topics.items():
            for partition, offset in runtime.windows.replay_points().items():
                replay_points[(name, partition)] = offset
        self.checkpoint.commit(
            replay_points,
            self._unsettled(),
            force=force,
            max_replay_lag=self.config.batching.max_replay_lag,
        )

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_lag >= 5:
            self._last_lag = now
            for (topic, partition), behind in self.source.lag().items():
                self.metrics.lag.labels(topic, str(partition)).set(behind)
            self.metrics.broker_up.set(1.0 if self.source.connected() else 0.0)
        if now - self._last_report < 10:
            return
        self._last_report = now
        self.series_scores.export()
        for name, runtime in self.topics.items():
            drift = runtime.drift.statistic()
            if drift is not None:
                self.metrics.score_drift.labels(name).set(drift)
            self.progress(
                f"topic {name}: model {self._model_state(runtime)}, {len(runtime.windows)} "
                f"series, {runtime.windows_scored} windows scored, "
                f"{self.alerts_published} alert(s) so far"
            )

    def _export_outcomes(self, name: str, runtime: TopicRuntime) -> None:
        for outcome, count in runtime.model.outcomes.items():
            new = count - runtime.exported_outcomes.get(outcome, 0)
            if new:
                self.metrics.trainings.labels(name, outcome).inc(new)
                runtime.exported_outcomes[outcome] = count

    def _export_model(self, name: str, runtime: TopicRuntime) -> None:
        model = runtime.model
        runtime.exported_state = model.state
        self.metrics.model_ready.labels(name).set(1.0 if model.ready else 0.0)
        if model.failures > runtime.exported_failures:
            self.metrics.training_failures.labels(name).inc(
                model.failures - runtime.exported_failures
            )
            runtime.exported_failures = model.failures
        if model.load_refusals > runtime.exported_refusals:
            self.metrics.model_refused.labels(name).inc(
                model.load_refusals - runtime.exported_refusals
            )
            runtime.exported_refusals = model.load_refusals
        if model.ready and model.detector is not None:
            info = model.detector.training
            labels = (
                name,
                model.detector.name,
                str(model.version),
                str(info.get("model_version")),
                str(info.get("trained_at")),
            )
            if runtime.exported_info is not None and runtime.exported_info != labels:
                self.metrics.model_info.remove(*runtime.exported_info)
            self.metrics.model_info.labels(*labels).set(1)
            runtime.exported_info = labels
            self.metrics.training_events.labels(name).set(model.training_events)
            if model.trained_here and not runtime.counted_training:
                self.metrics.trainings.labels(name, "bootstrap").inc()
                runtime.counted_training = True
