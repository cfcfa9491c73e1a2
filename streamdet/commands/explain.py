"""``streamdet explain ALERT_ID``: a picture of an alert's window, from ``alerts.jsonl`` or the
alert topic.

For a time series: each shown feature's observed values, the values the model expected, the
gap between them shaded, and the steps that scored highest marked. For a row: observed and
expected per feature, the most anomalous first. For an image: where the reconstruction error
sits. The title names the series, the rule that decided, its threshold and the severity.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamdet.core.errors import ConfigError, InvalidInputError

MAX_PANELS = 4


def find_in_file(path: Path, alert_id: str) -> dict[str, Any] | None:
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such alerts file")
    with path.open() as handle:
        for line in handle:
            if alert_id in line:
                alert = json.loads(line)
                if alert.get("alert_id") == alert_id:
                    return alert
    return None


def find_on_topic(config_path: str, alert_id: str) -> dict[str, Any] | None:
    """Read the config's alert topic from its start (a group of its own, nothing committed)."""
    from kafka import KafkaConsumer

    from streamdet.config import load_config
    from streamdet.io.kafka_client import client_settings

    config = load_config(config_path)
    if not config.kafka.bootstrap_servers:
        raise ConfigError("--from-kafka needs kafka.bootstrap_servers in the config")
    consumer = KafkaConsumer(
        config.alerts.topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        **client_settings(config.kafka),
    )
    try:
        for record in consumer:
            if alert_id.encode() in (record.value or b""):
                alert = json.loads(record.value)
                if alert.get("alert_id") == alert_id:
                    return alert
    finally:
        consumer.close()
    return None


def _title(alert: dict[str, Any]) -> str:
    return (
        f"{alert['topic']} / {alert['series']}: {alert['window_start']} .. "
        f"{alert['window_end']}\nrule {alert.get('rule')}, threshold "
        f"{alert.get('threshold', float('nan')):.4g}, score {alert['score']:.4g}, "
        f"severity {alert.get('severity', float('nan')):.3g}"
    )


def draw(alert: dict[str, Any], out: Path) -> Path:
    """Write the picture of ``alert`` to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    explanation = alert.get("explanation")
    if not explanation:
        raise InvalidInputError(
            f"alert {alert['alert_id']} carries no explanation (written by an older streamdet)"
        )
    if explanation.get("error_map") is not None:
        figure, axis = plt.subplots(figsize=(5, 4.5))
        image = axis.imshow(np.asarray(explanation["error_map"], float), cmap="magma")
        figure.colorbar(image, ax=axis, label="share of the reconstruction error")
        axis.set_xticks([])
        axis.set_yticks([])
    elif explanation.get("top_steps"):
        features = explanation["features"][:MAX_PANELS]
        observed = np.asarray(explanation["observed"], float)
        expected = explanation.get("expected")
        expected = None if expected is None else np.asarray(expected, float)
        steps = explanation["first_step"] + np.arange(len(observed))
        figure, axes = plt.subplots(
            len(features), 1, figsize=(9, 2.4 * len(features) + 0.8), sharex=True, squeeze=False
        )
        for k, (axis, name) in enumerate(zip(axes[:, 0], features, strict=True)):
            axis.plot(steps, observed[:, k], color="black", label="observed")
            if expected is not None:
                axis.plot(steps, expected[:, k], "--", color="tab:blue", label="expected")
                axis.fill_between(
                    steps, observed[:, k], expected[:, k], color="tab:red", alpha=0.2,
                    label="observed - expected",
                )  # fmt: skip
            marked = [s for s in explanation["top_steps"] if s["feature"] == name]
            axis.scatter(
                [s["step"] for s in marked],
                [s["observed"] for s in marked],
                color="tab:red",
                zorder=3,
                label="highest-scoring steps",
            )
            axis.set_ylabel(name)
        axes[0, 0].legend(loc="upper left", fontsize=8)
        axes[-1, 0].set_xlabel("step in the window")
    else:
        rows = explanation["top_features"][:12][::-1]
        names = [row["feature"] for row in rows]
        figure, axis = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
        positions = np.arange(len(rows))
        axis.barh(positions + 0.2, [row["observed"] or 0 for row in rows], 0.4, label="observed")
        if explanation.get("expected") is not None:
            axis.barh(
                positions - 0.2, [row["expected"] or 0 for row in rows], 0.4, label="expected"
            )
        axis.set_yticks(positions, names)
        axis.legend(fontsize=8)
    figure.suptitle(_title(alert), fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _explain(args: argparse.Namespace) -> None:
    if args.from_kafka:
        alert = find_on_topic(args.config, args.alert_id)
        where = "the alert topic"
    else:
        alert = find_in_file(Path(args.source), args.alert_id)
        where = args.source
    if alert is None:
        raise InvalidInputError(f"no alert {args.alert_id} in {where}")
    out = Path(args.out or f"alert-{args.alert_id[:8]}.png")
    draw(alert, out)
    print(out)


def add_parser(commands: Any) -> None:
    explain = commands.add_parser(
        "explain", help="draw an alert's window: observed, expected, what scored highest"
    )
    explain.add_argument("alert_id", help="the alert's alert_id")
    explain.add_argument(
        "--from",
        dest="source",
        default="alerts.jsonl",
        help="an alerts file (JSON lines; default alerts.jsonl)",
    )
    explain.add_argument(
        "--from-kafka", action="store_true", help="read the config's alert topic instead"
    )
    explain.add_argument("--config", default="config.yaml")
    explain.add_argument("--out", help="the PNG to write (default alert-<id>.png)")
    explain.set_defaults(func=_explain)
