#!/usr/bin/env python3
"""Write the streamdet Grafana dashboards into ./dashboards, built with Grafana's own
dashboards-as-code SDK (grafana-foundation-sdk).

Every panel uses the datasource template variable and the topic/detector variables the same
way. Run after editing; a test fails when the JSON in the repository differs from what this
script writes.

    python deploy/grafana/build_dashboards.py
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import heatmap, prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    GridPos,
    VariableHide,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
T = 'topic=~"$topic"'
TD = 'topic=~"$topic", detector=~"$detector"'
R = "$__rate_interval"
PANELS = {"timeseries": timeseries.Panel, "table": table.Panel, "heatmap": heatmap.Panel}


def variables(with_detector: bool) -> list[board.DatasourceVariable | board.QueryVariable]:
    def query_variable(name: str, label: str, query: str) -> board.QueryVariable:
        return (
            board.QueryVariable(name).label(label).datasource(DS).query(query)
            .include_all(True).multi(True).all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )  # fmt: skip

    items: list[board.DatasourceVariable | board.QueryVariable] = [
        board.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .hide(VariableHide.DONT_HIDE),
        query_variable("topic", "Topic", "label_values(streamdet_events_consumed_total, topic)"),
    ]  # fmt: skip
    if with_detector:
        items.append(query_variable(
            "detector", "Detector", f"label_values(streamdet_windows_scored_total{{{T}}}, detector)"
        ))  # fmt: skip
    return items


class Layout:
    """Panels of a fixed width, laid out left to right in a 24-column grid (wrapped before
    a panel that would overflow the row)."""

    def __init__(self) -> None:
        self.panels: list[timeseries.Panel | table.Panel | heatmap.Panel] = []
        self.x = self.y = self.row_height = 0

    def add(self, title: str, targets: list[tuple[str, str]], *, unit: str = "short",
            kind: str = "timeseries", width: int = 12, height: int = 8,
            description: str = "", instant: bool = False) -> None:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.row_height = max(self.row_height, height)
        panel = (
            PANELS[kind]().id(len(self.panels) + 1).title(title).description(description)
            .datasource(DS).unit(unit)
            .grid_pos(GridPos(h=height, w=width, x=self.x, y=self.y))
        )  # fmt: skip
        for i, (expr, legend) in enumerate(targets):
            query = (
                prometheus.Dataquery().ref_id(chr(ord("A") + i)).datasource(DS).expr(expr)
                .legend_format(legend)
            )  # fmt: skip
            query = query.instant() if instant else query.range()
            if kind in ("table", "heatmap"):
                query = query.format(PromQueryFormat(kind))
            panel = panel.with_target(query)
        if kind == "heatmap":
            panel = (
                panel.calculate(False).cell_gap(1)
                .color(heatmap.HeatmapColorOptions().scheme("Oranges"))
                .y_axis(heatmap.YAxisConfig().unit("short"))
            )  # fmt: skip
        self.panels.append(panel)
        self.x += width


def dashboard(uid: str, title: str, layout: Layout, with_detector: bool,
              annotations: list[board.AnnotationQuery] | None = None) -> dict:
    built = (
        board.Dashboard(title).uid(uid).tags(["streamdet"]).timezone("browser").editable()
        .refresh("10s").time("now-1h", "now").version(1)
        .variables(variables(with_detector))
        .annotations(annotations or [])
        .link(board.DashboardLink("streamdet").type(DashboardLinkType.DASHBOARDS)
              .tags(["streamdet"]).as_dropdown(True))
    )  # fmt: skip
    for panel in layout.panels:
        built = built.with_panel(panel)
    return json.loads(json.dumps(built.build(), cls=JSONEncoder))


def overview() -> dict:
    lay = Layout()
    lay.add("Events consumed /s", [(f"sum by (topic) (rate(streamdet_events_consumed_total{{{T}}}[{R}]))", "{{topic}}")],
            unit="ops", description="Messages read from each topic.")
    lay.add("Invalid events /s by reason", [(f"sum by (topic, reason) (rate(streamdet_invalid_events_total{{{T}}}[{R}]))", "{{topic}} {{reason}}")],
            unit="ops", description="Messages sent to the dead-letter topic.")
    lay.add("Alerts /s", [(f"sum by (topic, detector) (rate(streamdet_alerts_total{{{TD}}}[{R}]))", "{{topic}} {{detector}}")],
            unit="ops")
    lay.add("Consumer lag", [(f"sum by (topic, partition) (streamdet_consumer_lag_messages{{{T}}})", "{{topic}}/{{partition}}")],
            unit="short", description="Messages behind the log end, per partition.")
    lay.add("Partitions waiting unfetched", [(f"max by (topic, partition) (streamdet_partition_stalled_seconds{{{T}}})", "{{topic}}/{{partition}}")],
            unit="s", description="How long a partition's messages have waited while the consumer fetched none (not paused). "
            "Alert at 5 minutes; /healthz fails at 10, so the process is restarted with a new consumer.")
    lay.add("End-to-end latency", [
        (f"histogram_quantile(0.5, sum by (le) (rate(streamdet_end_to_end_latency_seconds_bucket[{R}])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(streamdet_end_to_end_latency_seconds_bucket[{R}])))", "p99"),
    ], unit="s", description="A window's last event received to its alert acknowledged.")
    lay.add("Batch size", [
        (f"sum(rate(streamdet_batch_size_sum[{R}])) / sum(rate(streamdet_batch_size_count[{R}]))", "mean"),
        (f"histogram_quantile(0.99, sum by (le) (rate(streamdet_batch_size_bucket[{R}])))", "p99"),
    ], unit="short", width=8)
    lay.add("Scoring latency per batch", [
        (f"histogram_quantile(0.5, sum by (le) (rate(streamdet_scoring_latency_seconds_bucket[{R}])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(streamdet_scoring_latency_seconds_bucket[{R}])))", "p99"),
    ], unit="s", width=8)
    lay.add("Windows scored /s", [(f"sum by (topic, detector) (rate(streamdet_windows_scored_total{{{T}}}[{R}]))", "{{topic}} {{detector}}")],
            unit="ops", width=8)
    lay.add("Broker reachable", [("min(streamdet_broker_up)", "broker up")], unit="bool", width=8,
            description="0 while Kafka cannot be reached: consumption, alerts and commits are retried.")
    lay.add("Send and commit failures /s", [
        (f"sum(rate(streamdet_alert_publish_failures_total[{R}]))", "alert publications"),
        (f"sum(rate(streamdet_commit_failures_total[{R}])) or vector(0)", "commits"),
        (f"sum(rate(streamdet_dead_letter_failures_total[{R}]))", "dead letters"),
        (f"sum(rate(streamdet_transaction_rewinds_total[{R}])) or vector(0)", "alert transactions re-read"),
    ], unit="ops", width=8, description="Each failure is retried with backoff; nothing is dropped. "
            "Under exactly-once, an aborted alert transaction re-reads its partitions from their last commit.")
    lay.add("Series evicted /s", [(f"sum by (topic) (rate(streamdet_series_evicted_total{{{T}}}[{R}]))", "{{topic}}")],
            unit="ops", width=8, description="Series forgotten because a topic tracks max_series already.")
    lay.add("Per-series state", [
        (f"sum by (topic) (streamdet_state_bytes{{{T}}})", "{{topic}}"),
        (f"sum by (topic) (streamdet_state_budget_bytes{{{T}}})", "{{topic}} budget"),
    ], unit="bytes", width=8,
            description="Windows, rules, cooldowns, history and scales of every tracked series; past max_state_bytes series are forgotten (invented ones first).")
    lay.add("Schema registry", [
        ("min(streamdet_schema_registry_up)", "registry up"),
        (f"sum by (topic) (streamdet_messages_waiting_for_schema{{{T}}})", "{{topic}} waiting"),
    ], unit="short", width=8,
            description="Avro and Protobuf topics: 0 up while the registry cannot answer; records with an uncached schema id wait (their topic paused) until it does.")
    return dashboard("streamdet-overview", "streamdet / Overview", lay, with_detector=True)


def detector() -> dict:
    lay = Layout()
    lay.add("Anomaly score distribution", [(f"sum by (le) (rate(streamdet_anomaly_score_bucket{{{TD}}}[{R}]))", "{{le}}")],
            kind="heatmap", width=24, height=9,
            description="The detector's instance scores per bucket.")
    lay.add("Threshold", [(f"streamdet_threshold{{{TD}}}", "{{topic}} {{detector}} ({{rule}})")], unit="short",
            description="Median threshold of the last scored batch, on the score's scale (each series has its own).")
    lay.add("Per-series scores (allowlist and top K)", [(f"streamdet_series_anomaly_score{{{T}}}", "{{series}}")],
            unit="short", description="Series outside the allowlist/top K are counted, not graphed.")
    lay.add("Alerts /s (after the per-series cooldown)", [(f"sum by (topic) (rate(streamdet_alerts_total{{{TD}}}[{R}]))", "{{topic}}")],
            unit="ops", width=12)
    lay.add("Series tracked", [(f"streamdet_series_tracked{{{T}}}", "{{topic}}")], unit="short", width=12)
    lay.add("Latest alerts", [(f"streamdet_recent_alert_severity{{{T}}}", "")], kind="table", width=24, height=8,
            instant=True, description="The last 20 alerts delivered: series, rule, window end, the feature that "
                                      "contributed most, and the severity (1 = the rule's threshold). "
                                      "`streamdet explain ALERT_ID` draws one.")
    lay.add("Operator verdicts in the last hour", [(f"sum by (topic, verdict) (increase(streamdet_feedback_total{{{T}}}[1h]))", "{{topic}} {{verdict}}")],
            unit="short", width=8, description="Verdicts published to the feedback topic: false_alarm, confirmed, retract.")
    lay.add("Precision from feedback", [(f"streamdet_feedback_precision{{{T}}}", "{{topic}}")],
            unit="percentunit", width=8, description="Confirmed / (confirmed + false alarms) among the verdicts kept.")
    lay.add("Held back by operators' verdicts", [
        (f"sum by (topic) (streamdet_feedback_raised_series{{{T}}})", "{{topic}} series with a raised bar"),
        (f"sum by (topic) (rate(streamdet_alerts_held_by_feedback_total{{{T}}}[{R}]))", "{{topic}} windows held /s"),
    ], unit="short", width=8, description="After a false_alarm verdict a series alerts only above its raised severity bar.")
    annotations = [
        board.AnnotationQuery().name("Anomaly alerts").enable(True).icon_color("red").datasource(DS)
        .expr(f"sum by (topic) (changes(streamdet_alerts_total{{{TD}}}[1m])) > 0")
    ]  # fmt: skip
    return dashboard("streamdet-detector", "streamdet / Detector", lay, with_detector=True,
                     annotations=annotations)


def models() -> dict:
    lay = Layout()
    lay.add("Models", [(f"streamdet_model_info{{{T}}}", "")], kind="table", width=24, height=6,
            instant=True, description="Version and training time of each topic's model.")
    lay.add("Model ready", [(f"streamdet_model_ready{{{T}}}", "{{topic}}")], unit="bool", width=8)
    lay.add("Training events", [(f"streamdet_model_training_events{{{T}}}", "{{topic}}")], unit="short", width=8)
    lay.add("Trainings in the last hour", [(f"sum by (topic, outcome) (increase(streamdet_model_trainings_total{{{T}}}[1h]))", "{{topic}} {{outcome}}")],
            unit="short", width=8, description="bootstrap: the first model; promoted / rejected: retrainings after their shadow comparison; failed.")
    lay.add("Model swaps in the last hour", [(f"sum by (topic) (increase(streamdet_model_reloads_total{{{T}}}[1h]))", "{{topic}}")],
            unit="short", width=8, description="New store versions served without restart: promotions, streamdet train, models promote/rollback.")
    lay.add("Windows rebuilt after restarts", [(f"sum by (topic) (streamdet_windows_rebuilt_total{{{T}}})", "{{topic}}")],
            unit="short", width=8)
    lay.add("Training failures in the last hour", [(f"sum by (topic) (increase(streamdet_model_training_failures_total{{{T}}}[1h]))", "{{topic}}")],
            unit="short", width=8, description="Each is retried with backoff; /readyz names the reason.")
    lay.add("Windows waiting for a model", [(f"streamdet_backlog_bytes{{{T}}}", "{{topic}}")],
            unit="bytes", width=8, description="Past batching.max_backlog_bytes the topic's partitions pause.")
    lay.add("Score drift (KS distance to the model's calibration scores)",
            [(f"streamdet_score_drift{{{T}}}", "{{topic}}")], unit="short", width=24,
            description="0: recent scores look like the training scores; above 0.3 for 30 minutes "
                        "StreamdetScoreDrift fires (a lasting change: retrain).")
    return dashboard("streamdet-models", "streamdet / Models", lay, with_detector=False)


def main() -> None:
    out = Path(__file__).resolve().parent / "dashboards"
    out.mkdir(exist_ok=True)
    for name, build in (("overview", overview), ("detector", detector), ("models", models)):
        (out / f"{name}.json").write_text(json.dumps(build(), indent=2) + "\n")


if __name__ == "__main__":
    main()
