"""Prometheus metrics (prometheus_client), named after prometheus.io's conventions.

Counts and states (events, windows, alerts, model state, trainings, backlog, lag...) are not
pushed by the loop: :class:`DaemonCollector` reads them from the pipelines, the outbox and
the checkpoint at scrape time, so no loop code keeps "what was exported" bookkeeping.
Distributions (scores, batch sizes, latencies) are observed as they happen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamdet.core.tensorflow import scoring_device
from streamdet.runtime.feedback import VERDICTS
from streamdet.serving.lifecycle import TRAINING_OUTCOMES
from streamdet.stream.decode import REASONS

if TYPE_CHECKING:
    from streamdet.app import Application

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCORE_BUCKETS = (-1, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 100)


class Metrics:
    """Every metric the daemon exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.score = Histogram(
            "streamdet_anomaly_score",
            "Instance scores of the topic's detector.",
            ["topic", "detector"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "streamdet_batch_size",
            "Windows per scoring batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.scoring_latency = Histogram(
            "streamdet_scoring_latency_seconds",
            "Time to score one batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "streamdet_end_to_end_latency_seconds",
            "Receipt of a window's last event to its batch's alerts being acknowledged.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.series_score = Gauge(
            "streamdet_series_anomaly_score",
            "Latest score of allowlisted and top-K series.",
            ["topic", "series"],
            registry=r,
        )
        self.series_suppressed = Counter(
            "streamdet_series_scores_suppressed",
            "Series scores not exported as gauges (outside allowlist/top-K).",
            ["topic"],
            registry=r,
        )

    def observe_scores(self, topic: str, detector: str, scores: Any, seconds: float) -> None:
        histogram = self.score.labels(topic, detector)
        for value in scores:
            histogram.observe(float(value))
        self.scoring_latency.observe(seconds)

    def watch(self, app: Application) -> None:
        """Export ``app``'s state at every scrape."""
        self.registry.register(DaemonCollector(app))


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=labels)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _stable(read: Callable[[], Iterable[Any]]) -> list[Any]:
    """A snapshot of state the loop may change while it is read (a scrape runs on the
    HTTP server's thread): read again if a dict changed size underneath."""
    for _ in range(5):
        try:
            return list(read())
        except RuntimeError:
            continue
    return []


class DaemonCollector(Collector):
    """Reads the daemon's counts and states when Prometheus scrapes."""

    def __init__(self, app: Application) -> None:
        self.app = app

    @staticmethod
    def _feedback(app: Application) -> Iterator[Metric]:
        book = app.feedback
        verdicts = _counter(
            "streamdet_feedback",
            "Operators' verdicts applied (a verdict delivered again is not counted again).",
            ["topic", "verdict"],
        )
        precision = _gauge(
            "streamdet_feedback_precision",
            "Confirmed / (confirmed + false alarms) among the verdicts kept for the topic.",
            ["topic"],
        )
        raised = _gauge(
            "streamdet_feedback_raised_series",
            "Series whose severity bar false-alarm verdicts raised above 1.",
            ["topic"],
        )
        held = _counter(
            "streamdet_alerts_held_by_feedback",
            "Flagged windows below their series' severity bar: not alerted.",
            ["topic"],
        )
        refused = _counter(
            "streamdet_feedback_refused",
            "Feedback messages refused (malformed, or naming an alert this process cannot "
            "resolve; logged with topic and offset).",
            [],
        )
        applied = dict(_stable(lambda: book.applied.items()))
        for pipeline in app.pipelines.values():
            topic = pipeline.name
            for verdict in VERDICTS:
                verdicts.add_metric([topic, verdict], applied.get((topic, verdict), 0))
            share = _stable(lambda topic=topic: [book.precision(topic)])
            if share and share[0] is not None:
                precision.add_metric([topic], share[0])
            raised.add_metric([topic], len(book.bars(topic)))
            held.add_metric([topic], pipeline.held_by_feedback)
        refused.add_metric([], book.invalid)
        yield from (verdicts, precision, raised, held, refused)

    @staticmethod
    def _schema_registry(app: Application) -> Iterator[Metric]:
        registry = app.schema_registry
        if registry is None:  # no Avro or Protobuf topic: no registry metrics
            return
        up = _gauge(
            "streamdet_schema_registry_up",
            "1 while the schema registry answers; 0 after a request failed (records wait).",
            [],
        )
        up.add_metric([], 1.0 if registry.up else 0.0)
        requests = _counter(
            "streamdet_schema_registry_requests",
            "Requests to the schema registry (schemas are cached: one per new schema id).",
            ["outcome"],
        )
        answered = registry.requests - registry.failures
        requests.add_metric(["answered"], answered)
        requests.add_metric(["failed"], registry.failures)
        unknown = _counter(
            "streamdet_schema_registry_unknown_ids",
            "Schema ids the registry said it does not know (their records are dead-lettered).",
            [],
        )
        unknown.add_metric([], registry.unknown_ids)
        waiting = _gauge(
            "streamdet_messages_waiting_for_schema",
            "Messages held until the schema registry answers (their topic is paused).",
            ["topic"],
        )
        for pipeline in app.pipelines.values():
            waiting.add_metric([pipeline.name], len(pipeline.waiting_for_schema))
        yield from (up, requests, unknown, waiting)

    def collect(self) -> Iterator[Metric]:
        app = self.app
        events = _counter("streamdet_events_consumed", "Messages consumed.", ["topic"])
        invalid = _counter(
            "streamdet_invalid_events",
            "Messages sent to the dead-letter sink, by reason.",
            ["topic", "reason"],
        )
        late = _counter(
            "streamdet_late_events_dropped", "Events dropped as out of order.", ["topic"]
        )
        windows = _counter("streamdet_windows_scored", "Windows scored.", ["topic", "detector"])
        alerts = _counter(
            "streamdet_alerts", "Alerts published (every sink acknowledged).", ["topic", "detector"]
        )
        rebuilt = _counter(
            "streamdet_windows_rebuilt",
            "Windows rebuilt from replayed events after a restart, not scored again.",
            ["topic"],
        )
        threshold = _gauge(
            "streamdet_threshold",
            "Median threshold (on the score's scale) of the topic's last scored batch.",
            ["topic", "detector", "rule"],
        )
        ready = _gauge("streamdet_model_ready", "1 when the topic's model scores.", ["topic"])
        info = _gauge(
            "streamdet_model_info",
            "Model identity (value 1).",
            ["topic", "detector", "store_version", "version", "trained_at"],
        )
        drift = _gauge(
            "streamdet_score_drift",
            "Kolmogorov-Smirnov distance (0..1) between the topic's last drift_window scores "
            "and the scores its model was calibrated on.",
            ["topic"],
        )
        trainings = _counter(
            "streamdet_model_trainings",
            "Models trained by this process, by outcome: bootstrap (the first model), "
            "promoted or rejected (a retraining, after its shadow comparison), failed.",
            ["topic", "outcome"],
        )
        training_events = _gauge(
            "streamdet_model_training_events", "Events the model was trained on.", ["topic"]
        )
        series = _gauge("streamdet_series_tracked", "Series with a window buffer.", ["topic"])
        evicted = _counter(
            "streamdet_series_evicted",
            "Series forgotten because the topic tracks max_series or max_state_bytes already "
            "(series presumed invented first, then the least recently seen).",
            ["topic"],
        )
        state = _gauge(
            "streamdet_state_bytes",
            "Memory the topic's per-series state holds (windows, rules, cooldowns, history, "
            "scales; estimated from per-series sizes).",
            ["topic"],
        )
        budget = _gauge(
            "streamdet_state_budget_bytes",
            "The topic's max_state_bytes: beyond it series are forgotten (those that never "
            "filled a window first).",
            ["topic"],
        )
        backlog = _gauge(
            "streamdet_backlog_bytes",
            "Bytes of windows waiting for the topic's model (partitions pause past the limit).",
            ["topic"],
        )
        failures = _counter(
            "streamdet_model_training_failures",
            "Trainings that failed (each is retried with backoff; the reason is in /readyz).",
            ["topic"],
        )
        refused = _counter(
            "streamdet_model_load_refusals",
            "Stored models refused at load (corrupt, incompatible).",
            ["topic"],
        )
        reloads = _counter(
            "streamdet_model_reloads",
            "New store versions swapped in without a restart (train, promote, rollback, "
            "another replica, a promoted retraining).",
            ["topic"],
        )
        for pipeline in app.pipelines.values():
            topic, model = pipeline.name, pipeline.lifecycle
            detector = pipeline.config.detector.name
            events.add_metric([topic], pipeline.events)
            for reason in REASONS:
                invalid.add_metric([topic, reason], pipeline.invalid.get(reason, 0))
            late.add_metric([topic], pipeline.windows.dropped_late)
            windows.add_metric([topic, detector], pipeline.windows_scored)
            alerts.add_metric([topic, detector], app.alerts_delivered.get(topic, 0))
            rebuilt.add_metric([topic], pipeline.rebuilt)
            if pipeline.last_threshold is not None:
                threshold.add_metric(
                    [topic, detector, pipeline.policy.name], pipeline.last_threshold
                )
            ready.add_metric([topic], 1.0 if model.ready else 0.0)
            bundle = model.bundle
            if bundle is not None:
                info.add_metric(
                    [
                        topic,
                        bundle.name,
                        str(bundle.version),
                        str(bundle.model_version),
                        str(bundle.trained_at),
                    ],
                    1.0,
                )
                training_events.add_metric([topic], bundle.training_events)
            statistic = pipeline.drift.statistic()
            if statistic is not None:
                drift.add_metric([topic], statistic)
            for outcome in TRAINING_OUTCOMES:
                trainings.add_metric([topic, outcome], model.outcomes.get(outcome, 0))
            series.add_metric([topic], len(pipeline.windows))
            evicted.add_metric([topic], pipeline.windows.evicted)
            backlog.add_metric([topic], pipeline.backlog_bytes)
            state.add_metric([topic], (_stable(lambda p=pipeline: [p.state_bytes()]) or [0])[0])
            budget.add_metric([topic], pipeline.config.max_state_bytes)
            failures.add_metric([topic], model.failures)
            refused.add_metric([topic], model.load_refusals)
            reloads.add_metric([topic], model.reloads)
        yield from (events, invalid, late, windows, alerts, rebuilt, threshold, ready, info)
        yield from (drift, trainings, training_events, series, evicted, backlog, state, budget)
        yield from (failures, refused, reloads)
        yield from self._feedback(app)
        yield from self._schema_registry(app)

        lag = _gauge(
            "streamdet_consumer_lag_messages",
            "Messages behind the log end.",
            ["topic", "partition"],
        )
        for (topic, partition), behind in _stable(lambda: dict(app.lag).items()):
            lag.add_metric([topic, str(partition)], behind)
        stalled = _gauge(
            "streamdet_partition_stalled_seconds",
            "Seconds a partition has had messages waiting that the consumer does not fetch "
            "(0 while it is read, caught up or paused).",
            ["topic", "partition"],
        )
        for (topic, partition), seconds in _stable(lambda: dict(app.stalled).items()):
            stalled.add_metric([topic, str(partition)], seconds)
        broker = _gauge(
            "streamdet_broker_up",
            "1 while the Kafka broker answers (always 1 for the embedded simulator).",
            [],
        )
        broker.add_metric([], 1.0 if app.broker_up else 0.0)
        commits = _counter(
            "streamdet_commit_failures",
            "Offset commits that failed and were retried.",
            ["error"],
        )
        for error, count in _stable(lambda: dict(app.checkpoint.failures).items()):
            commits.add_metric([error], count)
        rewinds = _counter(
            "streamdet_transaction_rewinds",
            "Alert transactions aborted with alerts in them (alerts.delivery: exactly_once): "
            "each time the partitions were read again from their last commit.",
            [],
        )
        rewinds.add_metric([], app.checkpoint.rewinds)
        publish = _counter(
            "streamdet_alert_publish_failures",
            "Alert deliveries that failed and were retried (alerts are kept until sent).",
            [],
        )
        publish.add_metric([], app.outbox.failures["alert"])
        dead = _counter(
            "streamdet_dead_letter_failures",
            "Dead-letter deliveries that failed and were retried (the source offset is not "
            "committed past them).",
            [],
        )
        dead.add_metric([], app.outbox.failures["dead_letter"])
        undelivered = _gauge(
            "streamdet_outbox_undelivered",
            "Alerts and dead letters waiting for a sink (past batching.max_undelivered every "
            "topic pauses).",
            ["kind"],
        )
        kinds = [item.kind for item in _stable(lambda: list(app.outbox.items))]
        for kind in ("alert", "dead_letter"):
            undelivered.add_metric([kind], kinds.count(kind))
        held = _gauge(
            "streamdet_outbox_backpressure",
            "1 while consumption is paused because too much is undelivered.",
            [],
        )
        held.add_metric([], 1.0 if app.outbox_full else 0.0)
        last_commit = _gauge(
            "streamdet_last_commit_timestamp_seconds",
            "Unix time of the last offset commit that succeeded.",
            [],
        )
        if app.checkpoint.last_success is not None:
            last_commit.add_metric([], app.checkpoint.last_success)
        yield from (lag, stalled, broker, commits, rewinds, publish, dead, last_commit)
        yield from (undelivered, held)
        yield self._recent_alerts(app)
        checks = _gauge(
            "streamdet_scoring_shape_checks_running",
            "Background checks of a scorer's batch shapes under way (compiling; until one "
            "passes, batches use the shapes already known to agree).",
            [],
        )
        # Read only if a Keras detector loaded it: scraping never imports TensorFlow.
        keras_base = sys.modules.get("streamdet.detectors.keras_base")
        checks.add_metric([], 0.0 if keras_base is None else keras_base.scoring_checks_running())
        yield checks
        device = _gauge(
            "streamdet_scoring_device_info",
            "Where Keras models score (value 1): TensorFlow's device, what it is, and the "
            "TensorFlow build installed (the cpu or gpu extra); absent while no model needs "
            "TensorFlow.",
            ["device", "name", "build"],
        )
        if "tensorflow" in sys.modules:
            where = scoring_device()
            device.add_metric([where.device, where.name, where.build], 1.0)
        yield device

    @staticmethod
    def _recent_alerts(app: Application) -> Metric:
        """The latest delivered alerts (a bounded few), for the dashboard's table."""
        recent = _gauge(
            "streamdet_recent_alert_severity",
            "Severity of each of the latest alerts delivered (at most 20), with its series, "
            "rule, window end and the feature that contributed most.",
            ["topic", "series", "rule", "window_end", "top_feature"],
        )
        for alert in _stable(lambda: list(app.recent_alerts)):
            explanation = alert.get("explanation") or {}
            top = explanation.get("top_features") or [{}]
            severity = alert.get("severity")
            recent.add_metric(
                [
                    alert["topic"],
                    alert["series"],
                    str(alert.get("rule")),
                    alert["window_end"],
                    str(top[0].get("feature", "")),
                ],
                float("nan") if severity is None else float(severity),
            )
        return recent


class SeriesScoreExporter:
    """Per-series score gauges for an allowlist plus the top K: a hard cap on label values."""

    def __init__(self, metrics: Metrics, allowlist: tuple[str, ...], top_k: int) -> None:
        self.metrics = metrics
        self.allowlist = set(allowlist)
        self.top_k = top_k
        self._latest: dict[str, dict[str, float]] = {}
        self._exported: dict[str, set[str]] = {}

    def observe(self, topic: str, series: str, score: float) -> None:
        self._latest.setdefault(topic, {})[series] = score

    def export(self) -> None:
        """Refresh the gauges; series that fall out of the top K are removed."""
        for topic, latest in self._latest.items():
            ranked = sorted(latest, key=latest.__getitem__, reverse=True)[: self.top_k]
            chosen = set(ranked) | (self.allowlist & set(latest))
            for series in self._exported.get(topic, set()) - chosen:
                self.metrics.series_score.remove(topic, series)
            for series in chosen:
                self.metrics.series_score.labels(topic, series).set(latest[series])
            self.metrics.series_suppressed.labels(topic).inc(len(latest) - len(chosen))
            self._exported[topic] = chosen
            latest.clear()
