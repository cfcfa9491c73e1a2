"""``config.yaml``: frozen pydantic models, YAML-path error messages, environment overrides.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. Environment variables ``STREAMDET_<SECTION>__<FIELD>`` (e.g.
``STREAMDET_KAFKA__BOOTSTRAP_SERVERS``) override the file; values are parsed as YAML scalars.

>>> cfg = load_config_text("topics: [{name: t, detector: {name: seq2seq}}]")
>>> cfg.topics[0].window.seq_len
50
>>> load_config_text("metrics: {port: http}")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamdet.errors.ConfigError: config.yaml is invalid:
  metrics.port: 'http' is not valid: Input should be a valid integer...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamdet.errors import ConfigError

DETECTORS_BY_KIND = {
    "timeseries": ("seq2seq", "vae_lstm"),
    "tabular": ("vaegmm", "adversarial_vae"),
    "image": ("image_vae", "adversarial_vae"),
}


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecurityConfig(Frozen):
    """Passed through to kafka-python's client settings."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> SecurityConfig:
        if self.protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"protocol {self.protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self


class KafkaConfig(Frozen):
    """Where to consume from and produce to. No bootstrap servers: the embedded simulator."""

    bootstrap_servers: str | None = None
    group_id: str = "streamdet"
    client_id: str = "streamdet"
    security: SecurityConfig = SecurityConfig()


class MessageFormat(Frozen):
    """How to read one JSON message of a topic."""

    series_key: str | None = Field(
        default="sensor", description="JSON field naming the series; null: the message key"
    )
    timestamp_field: str | None = Field(
        default="ts", description="JSON field with epoch s/ms or ISO 8601; null: Kafka time"
    )
    value_fields: tuple[str, ...] = ("value",)
    image_shape: tuple[int, int, int] | None = Field(
        default=None, description="image topics: (height, width, channels) of every image"
    )
    image_field: str = Field(
        default="image", description="image topics sent as JSON: the field with base64 PNG"
    )


class WindowConfig(Frozen):
    seq_len: int = Field(default=50, ge=2)
    stride: int = Field(default=1, ge=1)
    out_of_order: Literal["drop", "reorder"] = "drop"
    lateness_ms: int = Field(default=0, ge=0)


class DetectorConfig(Frozen):
    name: Literal["seq2seq", "vae_lstm", "vaegmm", "image_vae", "adversarial_vae"]
    params: dict[str, Any] = {}
    model_dir: str | None = None
    warmup_events: int = Field(default=2000, ge=10)


class ThresholdConfig(Frozen):
    """How scores become alerts: the detector's own threshold, or the likelihood policy."""

    policy: Literal["detector", "likelihood"] = "detector"
    threshold_perc: float = Field(default=99.0, ge=0, le=100)
    margin_perc: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="raise the inferred threshold by this share (%) of its magnitude",
    )
    likelihood: float = Field(default=0.9999, gt=0, lt=1)
    history: int = Field(default=2000, ge=10)


class TopicConfig(Frozen):
    """One consumed topic. ``tabular`` topics score each message as one row whose named
    features are ``format.value_fields``; ``image`` topics score each message as one image of
    ``format.image_shape``. For both, the series (for alert keys and cooldowns) is the
    ``series_key`` field if present, else the message key, else the topic."""

    name: str = Field(min_length=1)
    kind: Literal["timeseries", "tabular", "image"] = "timeseries"
    format: MessageFormat = MessageFormat()
    window: WindowConfig = WindowConfig()
    detector: DetectorConfig
    threshold: ThresholdConfig = ThresholdConfig()

    @model_validator(mode="after")
    def _detector_fits_kind(self) -> TopicConfig:
        if self.kind == "image" and self.format.image_shape is None:
            raise ValueError("image topics need format.image_shape: [height, width, channels]")
        allowed = DETECTORS_BY_KIND[self.kind]
        if self.detector.name not in allowed:
            raise ValueError(
                f"detector {self.detector.name!r} does not score {self.kind} topics; "
                f"allowed for kind {self.kind}: {', '.join(allowed)}"
            )
        return self


class AlertsConfig(Frozen):
    topic: str = "streamdet-alerts"
    cooldown_s: float = Field(
        default=300.0, ge=0, description="per series, in event time (replays behave alike)"
    )
    file: str | None = "alerts.jsonl"
    stdout: bool = Field(default=True, description="also print each alert as a JSON line")


class DeadLetterConfig(Frozen):
    topic: str = "streamdet-dlq"
    file: str | None = Field(default=None, description="embedded mode: append dead letters here")


class MetricsConfig(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    series_allowlist: tuple[str, ...] = Field(
        default=(), description="series whose score is always exported as a gauge"
    )
    top_k_series: int = Field(
        default=10, ge=0, le=1000, description="plus the K highest-scoring series (a hard cap)"
    )


class ModelsConfig(Frozen):
    store: str = "models"


class BatchingConfig(Frozen):
    max_batch: int = Field(default=256, ge=1)
    max_delay_ms: int = Field(default=50, ge=0)
    poll_timeout_ms: int = Field(default=200, ge=1)
    commit_interval_ms: int = Field(default=1000, ge=0)


class SimulatorConfig(Frozen):
    """The embedded source used when no Kafka is configured."""

    sensors: int = Field(default=4, ge=1)
    rate: float = Field(default=400.0, gt=0, description="events per second, all sensors")
    period: int = Field(default=96, ge=8, description="steps per simulated day")
    noise: float = Field(default=0.05, ge=0)
    anomaly_every: int = Field(default=700, ge=50, description="steps between injections")
    seed: int = 7
    max_events: int | None = Field(default=None, ge=1, description="stop after this many")


class StreamdetConfig(Frozen):
    kafka: KafkaConfig = KafkaConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    topics: tuple[TopicConfig, ...] = ()
    alerts: AlertsConfig = AlertsConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    metrics: MetricsConfig = MetricsConfig()
    models: ModelsConfig = ModelsConfig()
    batching: BatchingConfig = BatchingConfig()

    @model_validator(mode="after")
    def _unique_topics(self) -> StreamdetConfig:
        names = [t.name for t in self.topics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"topic names must be unique; repeated: {', '.join(duplicates)}")
        return self


def _format_errors(exc: ValidationError, source: str) -> ConfigError:
    lines = [f"{source} is invalid:"]
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"]
        allowed = (error.get("ctx") or {}).get("expected")
        if error["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key (check the spelling; unknown keys are refused)")
            continue
        bad = f"{error['input']!r} is not valid: " if error["type"] != "missing" else ""
        hint = f" (allowed: {allowed})" if allowed and allowed not in message else ""
        lines.append(f"  {path}: {bad}{message}{hint}")
    return ConfigError("\n".join(lines))


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    merged = dict(raw)
    for key, value in environ.items():
        if not key.startswith("STREAMDET_") or "__" not in key:
            continue
        path = [p.lower() for p in key[len("STREAMDET_") :].split("__")]
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[path[-1]] = yaml.safe_load(value)
    return merged


def load_config_text(
    text: str, source: str = "config.yaml", environ: dict[str, str] | None = None
) -> StreamdetConfig:
    """Parse and validate YAML text (plus environment overrides)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    raw = _apply_env(raw, dict(os.environ) if environ is None else environ)
    try:
        return StreamdetConfig.model_validate(raw)
    except ValidationError as exc:
        raise _format_errors(exc, source) from None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> StreamdetConfig:
    """Read, override from the environment and validate ``config.yaml``."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    return load_config_text(file.read_text(), str(file), environ)
