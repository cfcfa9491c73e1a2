"""Prometheus metrics (prometheus_client), named after prometheus.io's conventions."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCORE_BUCKETS = (-1, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 100)


class Metrics:
    """Every metric the daemon exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "streamdet_events_consumed", "Messages consumed.", ["topic"], registry=r
        )
        self.invalid = Counter(
            "streamdet_invalid_events",
            "Messages sent to the dead-letter sink, by reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.late = Counter(
            "streamdet_late_events_dropped",
            "Events dropped as out of order.",
            ["topic"],
            registry=r,
        )
        self.windows = Counter(
            "streamdet_windows_scored", "Windows scored.", ["topic", "detector"], registry=r
        )
        self.skipped = Counter(
            "streamdet_windows_unscored",
            "Windows completed while the topic's model was not ready.",
            ["topic"],
            registry=r,
        )
        self.alerts = Counter(
            "streamdet_alerts", "Alerts published.", ["topic", "detector"], registry=r
        )
        self.score = Histogram(
            "streamdet_anomaly_score",
            "Instance scores (0 = threshold).",
            ["topic", "detector"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.threshold = Gauge(
            "streamdet_threshold", "Current static threshold.", ["topic", "detector"], registry=r
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
        self.model_ready = Gauge(
            "streamdet_model_ready", "1 when the topic's model scores.", ["topic"], registry=r
        )
        self.model_info = Gauge(
            "streamdet_model_info",
            "Model identity (value 1).",
            ["topic", "detector", "store_version", "version", "trained_at"],
            registry=r,
        )
        self.score_drift = Gauge(
            "streamdet_score_drift",
            "Kolmogorov-Smirnov distance (0..1) between the topic's last drift_window scores "
            "and the scores its model was calibrated on.",
            ["topic"],
            registry=r,
        )
        self.trainings = Counter(
            "streamdet_model_trainings",
            "Models trained by this process, by outcome: bootstrap (the first model), "
            "promoted or rejected (a retraining, after its shadow comparison), failed.",
            ["topic", "outcome"],
            registry=r,
        )
        self.training_events = Gauge(
            "streamdet_model_training_events",
            "Events the model was trained on.",
            ["topic"],
            registry=r,
        )
        self.series = Gauge(
            "streamdet_series_tracked", "Series with a window buffer.", ["topic"], registry=r
        )
        self.replayed = Counter(
            "streamdet_windows_rebuilt",
            "Windows rebuilt from replayed events after a restart, not scored again.",
            ["topic"],
            registry=r,
        )
        self.lag = Gauge(
            "streamdet_consumer_lag_messages",
            "Messages behind the log end.",
            ["topic", "partition"],
            registry=r,
        )
        self.series_score = Gauge(
            "streamdet_series_anomaly_score",
            "Latest score of allowlisted and top-K series.",
            ["topic", "series"],
            registry=r,
        )
        self.series_evicted = Counter(
            "streamdet_series_evicted",
            "Series forgotten because the topic tracks max_series already (least recent first).",
            ["topic"],
            registry=r,
        )
        self.backlog_bytes = Gauge(
            "streamdet_backlog_bytes",
            "Bytes of windows waiting for the topic's model (partitions pause past the limit).",
            ["topic"],
            registry=r,
        )
        self.training_failures = Counter(
            "streamdet_model_training_failures",
            "Trainings that failed (each is retried with backoff; the reason is in /readyz).",
            ["topic"],
            registry=r,
        )
        self.model_refused = Counter(
            "streamdet_model_load_refusals",
            "Stored models refused at load (corrupt, incompatible, no threshold).",
            ["topic"],
            registry=r,
        )
        self.model_reloads = Counter(
            "streamdet_model_reloads",
            "New store versions swapped in without a restart (train, promote, rollback, "
            "another replica).",
            ["topic"],
            registry=r,
        )
        self.commit_failures = Counter(
            "streamdet_commit_failures",
            "Offset commits (or dead-letter confirmations) that failed and were retried.",
            ["error"],
            registry=r,
        )
        self.publish_failures = Counter(
            "streamdet_alert_publish_failures",
            "Alert publications that failed and were retried (alerts are kept until sent).",
            registry=r,
        )
        self.broker_up = Gauge(
            "streamdet_broker_up",
            "1 while the Kafka broker answers (always 1 for the embedded simulator).",
            registry=r,
        )
        self.series_suppressed = Counter(
            "streamdet_series_scores_suppressed",
            "Series scores not exported as gauges (outside allowlist/top-K).",
            ["topic"],
            registry=r,
        )


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
