"""The daemon: one :class:`Application` wires source -> windows -> detectors -> sinks/metrics.

It holds no model math: detectors score, :class:`~streamdet.pipeline.models.TopicModel`
trains and loads, threshold policies decide, sinks deliver.

Delivery is at least once. Offsets are committed only after the alerts and dead letters of
everything consumed so far are acknowledged, and the committed offset is the replay point
that lets a restarted daemon rebuild every series' window (see
:mod:`streamdet.sources.kafka`). Windows rebuilt from replayed events are not scored again.
"""

from __future__ import annotations

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
from streamdet.pipeline.decode import InvalidMessage, decode_image, decode_timeseries
from streamdet.pipeline.models import TopicModel
from streamdet.pipeline.window_store import ReadyWindow, WindowStore
from streamdet.progress import ProgressFn, stderr_progress
from streamdet.sinks.alerts import AlertSink, FanOutAlertSink, JsonLinesAlertSink, alert_id, iso_ms
from streamdet.sinks.dead_letter import DeadLetterSink, JsonLinesDeadLetterSink
from streamdet.sources.base import Message, Source
from streamdet.sources.simulator import SensorSimulator, SimulatorSource
from streamdet.thresholds import AnomalyLikelihood


@dataclass
class TopicRuntime:
    """Everything the daemon keeps per topic."""

    config: TopicConfig
    windows: WindowStore
    model: TopicModel
    # Windows completed while the model trains, scored once it is ready (bounded: the oldest
    # are dropped first, and counted, if training outlasts it).
    backlog: deque[ReadyWindow] = field(default_factory=lambda: deque(maxlen=200_000))
    likelihoods: dict[str, AnomalyLikelihood] = field(default_factory=dict)
    last_alert_ms: dict[str, int] = field(default_factory=dict)
    exported_state: str = ""
    windows_scored: int = 0
    counted_training: bool = False


class Application:
    """The streamdet daemon.

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
        store = Path(config.models.store)
        self.topics: dict[str, TopicRuntime] = {}
        for topic in config.topics:
            n_features = (
                int(np.prod(topic.format.image_shape))
                if topic.kind == "image"
                else len(topic.format.value_fields)
            )
            model = TopicModel(topic, store, n_features, progress)
            windows = WindowStore(
                model.seq_len,
                n_features,
                1 if model.tabular else topic.window.stride,
                "accept" if model.tabular else topic.window.out_of_order,
                topic.window.lateness_ms,
            )
            self.topics[topic.name] = TopicRuntime(topic, windows, model)
        self._producer: Any = None
        if source is None or alert_sink is None or dead_letters is None:
            default_source, default_alerts, default_dlq = self._default_io()
            source = source or default_source
            alert_sink = alert_sink or default_alerts
            dead_letters = dead_letters or default_dlq
        self.source = source
        self.alert_sink = alert_sink
        self.dead_letters = dead_letters
        for name, runtime in self.topics.items():
            # Create each topic's series at 0 so dashboards and rules see them from the start.
            detector = runtime.config.detector.name
            for counter in (
                self.metrics.events,
                self.metrics.late,
                self.metrics.skipped,
                self.metrics.replayed,
                self.metrics.trainings,
            ):
                counter.labels(name)
            self.metrics.windows.labels(name, detector)
            self.metrics.alerts.labels(name, detector)
            self.metrics.model_ready.labels(name).set(0)
        self.batcher: MicroBatcher[ReadyWindow] = MicroBatcher(
            config.batching.max_batch, config.batching.max_delay_ms
        )
        self._next_offsets: dict[tuple[str, int], int] = {}
        self._assignment: set[tuple[str, int]] = set()
        self._assignment_checked = 0.0
        self._stop = False
        self._last_report = self._last_commit = self._last_lag = time.monotonic()
        self._last_loop = time.monotonic()
        self.alerts_published = 0

    def _default_io(self) -> tuple[Source, AlertSink, DeadLetterSink]:
        cfg = self.config
        printed = JsonLinesAlertSink(cfg.alerts.file, echo=cfg.alerts.stdout)
        if cfg.kafka.bootstrap_servers:
            from streamdet.sinks.kafka import KafkaAlertSink, KafkaDeadLetterSink, make_producer
            from streamdet.sources.kafka import KafkaSource

            self._producer = make_producer(cfg.kafka)
            source = KafkaSource(cfg.kafka, [t.name for t in cfg.topics])
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
            first_anomaly=first.detector.warmup_events + sim.anomaly_every,
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

            m = self.config.metrics
            server = serve(m.host, m.port, self.metrics.registry, self.healthy, self.ready)
            self.progress(
                f"metrics at http://{m.host}:{server.server_port}/metrics (and /healthz, /readyz)"
            )
        poll_ms = self.config.batching.poll_timeout_ms
        try:
            while not self._stop:
                self._last_loop = time.monotonic()
                for message in self.source.poll(poll_ms):
                    self._handle(message)
                self._release_backlogs()
                self._score_if_due(force=False)
                self._commit(force=False)
                self._report()
                if getattr(self.source, "exhausted", False) and not self._training():
                    break
            self._release_backlogs()
            self._score_if_due(force=True)
            self._commit(force=True)
        finally:
            self.source.close()
            if self._producer is not None:
                self._producer.close(timeout=5)
        self.progress(f"stopped: {self.alerts_published} alert(s) published")
        return 0

    def healthy(self) -> tuple[bool, str]:
        """The loop turned recently (it polls at least every ``poll_timeout_ms``)."""
        idle = time.monotonic() - self._last_loop
        limit = max(30.0, 10 * self.config.batching.poll_timeout_ms / 1000)
        if idle > limit:
            return False, f"the consume loop has not turned for {idle:.0f}s"
        return True, "consume loop running"

    def ready(self) -> tuple[bool, str]:
        """Partitions assigned (Kafka) and every topic's model loaded."""
        assigned = getattr(self.source, "assigned", None)
        if assigned is not None and not self._assignment:
            return False, "no partitions assigned yet"
        waiting = [n for n, t in self.topics.items() if not t.model.ready]
        if waiting:
            states = ", ".join(f"{n}: {self.topics[n].model.state}" for n in waiting)
            return False, f"models not ready ({states})"
        return True, "consuming with every model loaded"

    def _training(self) -> bool:
        return any(t.model.state == "training" for t in self.topics.values())

    # ---- hot path ---------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        runtime = self.topics.get(message.topic)
        if runtime is None:
            return
        key = (message.topic, message.partition)
        self._next_offsets[key] = max(self._next_offsets.get(key, -1), message.offset + 1)
        self.metrics.events.labels(message.topic).inc()
        try:
            if runtime.config.kind == "image":
                event = decode_image(message, runtime.config.format, runtime.model.instance_shape)
            else:
                event = decode_timeseries(message, runtime.config.format, runtime.model.tabular)
        except InvalidMessage as exc:
            self.metrics.invalid.labels(message.topic, exc.reason).inc()
            self.dead_letters.send(message, exc.reason, str(exc))
            return
        if not runtime.model.ready:
            runtime.model.offer(
                event.series, event.values, self._all_partitions_seen(message.topic)
            )
        dropped = runtime.windows.dropped_late
        now = time.monotonic()
        scored_through = getattr(self.source, "scored_through", None)
        for window in runtime.windows.add_all(event, now):
            if scored_through and window.end_offset <= scored_through(
                window.topic, window.partition
            ):
                self.metrics.replayed.labels(message.topic).inc()
            elif runtime.model.ready:
                self.batcher.add(window, now)
            else:
                if len(runtime.backlog) == runtime.backlog.maxlen:
                    self.metrics.skipped.labels(message.topic).inc()
                runtime.backlog.append(window)
        if runtime.windows.dropped_late > dropped:
            self.metrics.late.labels(message.topic).inc()
        self.metrics.series.labels(message.topic).set(len(runtime.windows))

    def _all_partitions_seen(self, topic: str) -> bool:
        """True when every partition of ``topic`` assigned to us has delivered data."""
        assigned = getattr(self.source, "assigned", None)
        if assigned is None:
            return True
        now = time.monotonic()
        # An empty assignment means "not known yet" (before the group join completes): ask
        # again rather than trusting a cached empty set, which would vacuously pass.
        if not self._assignment or now - self._assignment_checked > 1.0:
            self._assignment = assigned()
            self._assignment_checked = now
        mine = [key for key in self._assignment if key[0] == topic]
        return bool(mine) and all(key in self._next_offsets for key in mine)

    def _release_backlogs(self) -> None:
        now = time.monotonic()
        for name, runtime in self.topics.items():
            if runtime.model.state != runtime.exported_state:
                self._export_model(name, runtime)
            if runtime.model.ready and runtime.backlog:
                self.progress(
                    f"topic {name}: scoring {len(runtime.backlog)} windows that arrived "
                    "during training"
                )
                while runtime.backlog:
                    self.batcher.add(runtime.backlog.popleft(), now)
                    if self.batcher.due(now):
                        self._score_if_due(force=True)

    def _score_if_due(self, force: bool) -> None:
        now = time.monotonic()
        if not (force and len(self.batcher)) and not self.batcher.due(now):
            return
        batch = self.batcher.drain()
        self.metrics.batch_size.observe(len(batch))
        alerts: list[tuple[dict[str, Any], float]] = []
        by_topic: dict[str, list[ReadyWindow]] = {}
        for window in batch:
            by_topic.setdefault(window.topic, []).append(window)
        for topic, windows in by_topic.items():
            alerts.extend(self._score_topic(self.topics[topic], windows))
        self.alert_sink.publish([alert for alert, _ in alerts])
        published = time.monotonic()
        for alert, _ in alerts:
            self.metrics.alerts.labels(alert["topic"], alert["detector"]).inc()
        # Every window's verdict is settled once its batch's alerts are acknowledged.
        for window in batch:
            self.metrics.e2e_latency.observe(published - window.received_at)
        self.alerts_published += len(alerts)

    def _score_topic(
        self, runtime: TopicRuntime, windows: list[ReadyWindow]
    ) -> list[tuple[dict[str, Any], float]]:
        """Score one topic's windows; return (alert, receipt time) for each alert raised."""
        detector = runtime.model.detector
        assert detector is not None
        started = time.perf_counter()
        prediction = detector.predict(
            runtime.model.instances(np.stack([w.values for w in windows]))
        )
        self.metrics.scoring_latency.observe(time.perf_counter() - started)
        data = prediction["data"]
        name = detector.name
        topic = runtime.config.name
        threshold = np.asarray(detector.threshold, dtype=np.float64)
        self.metrics.windows.labels(topic, name).inc(len(windows))
        runtime.windows_scored += len(windows)
        self.metrics.threshold.labels(topic, name).set(float(threshold.mean()))
        policy = runtime.config.threshold
        cooldown_ms = int(self.config.alerts.cooldown_s * 1000)
        alerts = []
        for i, window in enumerate(windows):
            score = float(data["instance_score"][i])
            self.metrics.score.labels(topic, name).observe(score)
            self.series_scores.observe(topic, window.series, score)
            if policy.policy == "likelihood":
                tracker = runtime.likelihoods.setdefault(
                    window.series, AnomalyLikelihood(history=policy.history, log_scale=False)
                )
                flagged = tracker.update(score) >= policy.likelihood
            else:
                flagged = bool(data[detector.outcome_key][i])
            if not flagged:
                continue
            last = runtime.last_alert_ms.get(window.series)
            if last is not None and window.end_ts_ms - last < cooldown_ms:
                continue
            runtime.last_alert_ms[window.series] = window.end_ts_ms
            feature = np.asarray(data["feature_score"][i])
            alert = {
                "alert_id": alert_id(topic, window.partition, window.end_offset, name),
                "series": window.series,
                "topic": topic,
                "partition": window.partition,
                "detector": name,
                "model_version": detector.training.get("model_version"),
                "score": score,
                "threshold": threshold.tolist(),
                "window_start": iso_ms(window.start_ts_ms),
                "window_end": iso_ms(window.end_ts_ms),
                "window_start_offset": window.start_offset,
                "window_end_offset": window.end_offset,
                "feature_scores": feature.reshape(-1, feature.shape[-1]).mean(axis=0).tolist(),
                "detected_at": iso_ms(int(time.time() * 1000)),
            }
            alerts.append((alert, window.received_at))
        return alerts

    def _commit(self, force: bool) -> None:
        """Commit replay points once nothing consumed is still waiting to be scored."""
        now = time.monotonic()
        interval = self.config.batching.commit_interval_ms / 1000
        if not force and now - self._last_commit < interval:
            return
        if len(self.batcher) or not self._next_offsets:
            return
        if any(runtime.backlog for runtime in self.topics.values()):
            return
        self.dead_letters.confirm()
        positions: dict[tuple[str, int], tuple[int, int]] = {}
        for (topic, partition), next_offset in self._next_offsets.items():
            needed = self.topics[topic].windows.replay_points().get(partition, next_offset)
            positions[(topic, partition)] = (min(needed, next_offset), next_offset - 1)
        commit_positions = getattr(self.source, "commit_positions", None)
        if commit_positions is not None:
            commit_positions(positions)
        else:
            self.source.commit({k: replay for k, (replay, _) in positions.items()})
        self._last_commit = now

    def _report(self) -> None:
        now = time.monotonic()
        assigned = getattr(self.source, "assigned", None)
        if assigned is not None and now - self._assignment_checked > 1.0:
            self._assignment = assigned()
            self._assignment_checked = now
        lag = getattr(self.source, "lag", None)
        if lag is not None and now - self._last_lag >= 5:
            self._last_lag = now
            for (topic, partition), behind in lag().items():
                self.metrics.lag.labels(topic, str(partition)).set(behind)
        if now - self._last_report < 10:
            return
        self._last_report = now
        self.series_scores.export()
        for name, runtime in self.topics.items():
            self.progress(
                f"topic {name}: model {runtime.model.state}, {len(runtime.windows)} series, "
                f"{runtime.windows_scored} windows scored, {self.alerts_published} alert(s) so far"
            )

    def _export_model(self, name: str, runtime: TopicRuntime) -> None:
        model = runtime.model
        runtime.exported_state = model.state
        self.metrics.model_ready.labels(name).set(1.0 if model.ready else 0.0)
        if model.ready and model.detector is not None:
            info = model.detector.training
            self.metrics.model_info.labels(
                name,
                model.detector.name,
                str(info.get("model_version")),
                str(info.get("trained_at")),
            ).set(1)
            self.metrics.training_events.labels(name).set(model.training_events)
            if model.trained_here and not runtime.counted_training:
                self.metrics.trainings.labels(name).inc()
                runtime.counted_training = True
