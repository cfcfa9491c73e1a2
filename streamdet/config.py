"""``config.yaml``: frozen pydantic models, YAML-path error messages, environment overrides.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. Environment variables ``STREAMDET_<SECTION>__<FIELD>`` (e.g.
``STREAMDET_KAFKA__BOOTSTRAP_SERVERS``) override the file. Their values are taken as they
are (pydantic converts numbers and booleans); only a value starting with ``[`` or ``{`` is
read as YAML, and ``null`` means none. Passwords are never parsed, so ``a #b`` stays whole.

Secrets (``sasl_password``, ``ssl_password``, the metrics endpoint's password) are
``SecretStr``: printed as ``**********`` by ``check-config``, in errors and in logs. Each can
also come from a file (``sasl_password_file``), e.g. a mounted Kubernetes secret.

>>> cfg = load_config_text("topics: [{name: t, detector: {name: seq2seq}}]")
>>> cfg.topics[0].window.seq_len
50
>>> load_config_text("metrics: {port: http}")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamdet.core.errors.ConfigError: config.yaml is invalid:
  metrics.port: 'http' is not valid: Input should be a valid integer...
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streamdet.core.errors import ConfigError
from streamdet.detectors.catalog import detector_names, detectors_for
from streamdet.thresholds import DEFAULT_RULE, RULES, rule_names


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret_file(path: str | None, field: str) -> SecretStr | None:
    if path is None:
        return None
    try:
        return SecretStr(Path(path).read_text().rstrip("\r\n"))
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None


class SecurityConfig(Frozen):
    """Passed through to kafka-python's client settings."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: str | None = Field(
        default=None, description="read sasl_password from this file (trailing newline cut)"
    )
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = Field(default=None, description="of ssl_keyfile")
    ssl_password_file: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _complete_and_consistent(self) -> SecurityConfig:
        for name in ("sasl_password", "ssl_password"):
            from_file = _read_secret_file(getattr(self, f"{name}_file"), f"{name}_file")
            if from_file is not None:
                if getattr(self, name) is not None:
                    raise ValueError(f"give {name} or {name}_file, not both")
                object.__setattr__(self, name, from_file)
        if self.protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"protocol {self.protocol} needs sasl_mechanism, sasl_username and "
                "sasl_password (or sasl_password_file)"
            )
        ssl_files = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
        if ssl_files and not self.protocol.endswith("SSL"):
            raise ValueError(
                f"{', '.join(ssl_files)} given with protocol {self.protocol}, which does not "
                "use TLS: set protocol to SSL or SASL_SSL (or remove them)"
            )
        return self


class KafkaConfig(Frozen):
    """Where to consume from and produce to. No bootstrap servers: the embedded simulator."""

    bootstrap_servers: str | None = None
    group_id: str = "streamdet"
    client_id: str = "streamdet"
    group_instance_id: str | None = Field(
        default=None,
        description="static membership: a restart within session_timeout_ms keeps partitions",
    )
    assignment: Literal["cooperative-sticky", "range"] = Field(
        default="cooperative-sticky",
        description="partition assignment: cooperative-sticky moves only the partitions "
        "that must move",
    )
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    delivery_timeout_ms: int = Field(
        default=120_000,
        ge=1_000,
        description="a producer retries a send for this long (not a count of retries)",
    )
    security: SecurityConfig = SecurityConfig()


class MessageFormat(Frozen):
    """How to read one message of a topic: its encoding, then which fields of the decoded
    record hold the series, the time and the values."""

    encoding: Literal["json", "avro", "protobuf"] = Field(
        default="json",
        description="json: UTF-8 JSON objects; avro, protobuf: records in the Confluent wire "
        "format (magic byte, schema id), their schemas read from schema_registry",
    )
    reader_schema: Literal["writer", "latest"] = Field(
        default="writer",
        description="avro: read each record with the schema it was written with (writer), or "
        "resolve it to the subject's latest version (latest: field names of the newest "
        "schema, aliases and defaults applied to older records)",
    )
    subject: str | None = Field(
        default=None, description="reader_schema latest: the subject (default <topic>-value)"
    )
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


class LimitsConfig(Frozen):
    """What one message may hold. A message beyond a limit goes to the dead-letter topic
    with its reason; it never stops the daemon."""

    max_message_bytes: int = Field(default=1_048_576, ge=64)
    max_json_depth: int = Field(default=32, ge=2, le=1000)
    max_series_chars: int = Field(default=256, ge=1)
    max_future_ms: int | None = Field(
        default=300_000,
        ge=0,
        description="events stamped further ahead of the wall clock: timestamp_out_of_range "
        "(accepted, one would hold back its series' later events as late until the clock "
        "reached it)",
    )
    max_age_ms: int | None = Field(
        default=None,
        ge=0,
        description="events older than this (by the wall clock): timestamp_out_of_range; "
        "null: any age (replays of history)",
    )
    max_image_pixels: int = Field(default=16_777_216, ge=1)


class WindowConfig(Frozen):
    seq_len: int = Field(default=50, ge=2)
    stride: int = Field(
        default=1,
        ge=1,
        description="score one window in about every stride events (below seq_len); which "
        "ones is decided by event time, so a restart scores the same windows again",
    )
    out_of_order: Literal["drop", "reorder"] = "drop"
    lateness_ms: int = Field(default=0, ge=0)
    normalise: Literal["global", "per_series"] = Field(
        default="global",
        description="global: the detector's own normalisation over all series; per_series: "
        "each series in its own standard units first (series at different scales)",
    )

    @model_validator(mode="after")
    def _windows_overlap(self) -> WindowConfig:
        if self.stride >= self.seq_len:
            raise ValueError(
                f"stride {self.stride} must be below seq_len {self.seq_len}: a window is "
                "due at most stride events after the last one only while windows overlap"
            )
        return self


class DetectorConfig(Frozen):
    name: str = Field(description="a registered detector (streamdet.detectors.DETECTORS)")
    params: dict[str, Any] = {}
    model_dir: str | None = None
    warmup_events: int = Field(default=2000, ge=10)
    retry_after_s: float = Field(
        default=30.0, gt=0, description="first retry of a failed training; doubles each time"
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in detector_names():
            raise ValueError(f"unknown detector {name!r}; allowed: {', '.join(detector_names())}")
        return name


# A topic's ``threshold``: the parameters of one registered rule, chosen by ``policy``
# (each rule's own pydantic model, so a new rule needs no edit here).
ThresholdConfig = Annotated[
    Union[tuple(RULES[name].Params for name in rule_names())],  # noqa: UP007
    Field(discriminator="policy"),
]
# ``policy: detector`` was the percentile rule's name while the detector applied it.
RULE_ALIASES = {"detector": "percentile"}


class RetrainConfig(Frozen):
    """When and how a topic's model keeps learning from the stream it watches.

    A retraining fits on each series' recent history (``history_events`` per series, the
    windows the policy flagged left out, alerted or not), warm-started from the serving
    model's weights where the detector allows it, in a background thread. The last
    ``holdout`` share of each series' history is scored in shadow by both models; the new
    one is promoted unless it raises more false alarms there than the serving one and more than
    ``max_false_alarm_rate`` (every window of the holdout is taken as normal: flagged spans
    are excluded). Either way the new version is kept in the store.
    """

    every_events: int | None = Field(
        default=None, ge=100, description="retrain after this many of the topic's events"
    )
    every_s: float | None = Field(
        default=None, gt=0, description="retrain after this much event time (seconds)"
    )
    on_drift: float | None = Field(
        default=None, gt=0, le=1, description="retrain when streamdet_score_drift reaches it"
    )
    min_events_between: int = Field(
        default=1000, ge=0, description="events between two retrainings, whatever the trigger"
    )
    history_events: int = Field(
        default=2000, ge=50, description="recent events kept per series to retrain on"
    )
    epochs: int | None = Field(
        default=None, ge=1, description="epochs of a retraining (default: the detector's)"
    )
    holdout: float = Field(default=0.2, gt=0, lt=1)
    max_false_alarm_rate: float = Field(default=0.01, ge=0, le=1)

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.every_events, self.every_s, self.on_drift))


class TopicConfig(Frozen):
    """One consumed topic. ``tabular`` topics score each message as one row whose named
    features are ``format.value_fields``; ``image`` topics score each message as one image of
    ``format.image_shape``. For both, the series (for alert keys and cooldowns) is the
    ``series_key`` field if present, else the message key, else the topic."""

    name: str = Field(min_length=1)
    kind: Literal["timeseries", "tabular", "image"] = "timeseries"
    format: MessageFormat = MessageFormat()
    limits: LimitsConfig = LimitsConfig()
    window: WindowConfig = WindowConfig()
    detector: DetectorConfig
    threshold: ThresholdConfig = Field(  # type: ignore[valid-type]
        default_factory=lambda: RULES[DEFAULT_RULE].Params(),
        description="the threshold rule (threshold.policy) and its parameters",
    )
    max_series: int = Field(
        default=100_000,
        ge=1,
        description="series tracked at once; beyond it one is forgotten (those that never "
        "filled a window first, then the least recently seen)",
    )
    max_state_bytes: int = Field(
        default=1_073_741_824,
        ge=1_048_576,
        description="memory the topic's per-series state may hold (windows, threshold rules, "
        "cooldowns, retraining history, running scales; streamdet_state_bytes); beyond it "
        "series are forgotten as beyond max_series",
    )
    retrain: RetrainConfig = RetrainConfig()
    drift_window: int = Field(
        default=2000,
        ge=100,
        description="recent scores compared with the model's calibration scores "
        "(streamdet_score_drift)",
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _policy_named(cls, value: Any) -> Any:
        if isinstance(value, dict):
            policy = value.get("policy", DEFAULT_RULE)
            value = {**value, "policy": RULE_ALIASES.get(policy, policy)}
        return value

    @model_validator(mode="after")
    def _detector_fits_kind(self) -> TopicConfig:
        if self.kind == "image" and self.format.image_shape is None:
            raise ValueError("image topics need format.image_shape: [height, width, channels]")
        if self.kind == "image" and self.format.image_shape is not None:
            pixels = math.prod(self.format.image_shape)
            if pixels > self.limits.max_image_pixels:
                raise ValueError(
                    f"format.image_shape {list(self.format.image_shape)} is {pixels} values, "
                    f"over limits.max_image_pixels ({self.limits.max_image_pixels}); an image "
                    "is refused by its header's size before it is decoded, so raise the limit "
                    "only for images you mean to score"
                )
        allowed = detectors_for(self.kind)
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
    cloudevents: Literal["binary", "structured"] = Field(
        default="binary",
        description="CloudEvents content mode on the alert topic: binary (the alert as the "
        "value, ce_* headers) or structured (the whole event as the JSON value)",
    )
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="at_least_once: an alert may be published twice after a crash (with the "
        "same alert_id); exactly_once (Kafka only): alerts and the consumed offsets are "
        "committed in one Kafka transaction, so a subscriber reading with "
        "isolation.level=read_committed sees each alert once; alerts then become visible at "
        "each commit (batching.commit_interval_ms)",
    )
    transactional_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="exactly_once: this member's transactional id, the same across its "
        "restarts (a restart then aborts what a killed process left open at once) and "
        "different from every other member's; default: streamdet-<group_id>-<"
        "group_instance_id, or the host name>",
    )


class FeedbackConfig(Frozen):
    """Operators' verdicts on alerts (see README, "Teaching the daemon back")."""

    topic: str | None = Field(
        default=None,
        description="the feedback topic (Kafka only; compacted, keyed by alert_id); "
        "null: no feedback",
    )
    margin: float = Field(
        default=0.25,
        ge=0,
        le=10,
        description="after a false alarm, the series alerts only from its severity x (1 + margin)",
    )
    max_severity_bar: float = Field(
        default=10.0, gt=1, description="the highest a series' severity bar can be raised to"
    )
    max_verdicts: int = Field(
        default=100_000, ge=1, description="verdicts kept (the oldest are forgotten first)"
    )


class DeadLetterConfig(Frozen):
    topic: str = "streamdet-dlq"
    file: str | None = Field(default=None, description="embedded mode: append dead letters here")
    max_bytes: int = Field(
        default=900_000,
        ge=1024,
        description="a dead letter's value is cut to this (original size in a header); keep "
        "it below the dead-letter topic's max.message.bytes. A dead letter the topic still "
        "refuses as too large is cut to half, again, until it fits",
    )


class MetricsConfig(Frozen):
    """The HTTP endpoint (/metrics, /healthz, /readyz). Bound to localhost unless told
    otherwise; optional TLS and basic auth for anything wider."""

    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None
    basic_auth_password_file: str | None = None
    request_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="deadline for a whole request and its answer"
    )
    max_connections: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="open connections; one more evicts the oldest still sending its request",
    )
    series_allowlist: tuple[str, ...] = Field(
        default=(), description="series whose score is always exported as a gauge"
    )
    top_k_series: int = Field(
        default=10, ge=0, le=1000, description="plus the K highest-scoring series (a hard cap)"
    )

    @model_validator(mode="after")
    def _auth_and_tls_complete(self) -> MetricsConfig:
        from_file = _read_secret_file(self.basic_auth_password_file, "basic_auth_password_file")
        if from_file is not None:
            object.__setattr__(self, "basic_auth_password", from_file)
        if bool(self.basic_auth_username) != bool(self.basic_auth_password):
            raise ValueError("basic auth needs both basic_auth_username and basic_auth_password")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("TLS needs both tls_certfile and tls_keyfile")
        return self


class SchemaRegistryConfig(Frozen):
    """A schema registry speaking Confluent's REST API, for topics whose ``format.encoding``
    is avro or protobuf (Confluent Schema Registry; Apicurio's ``/apis/ccompat/v7``, which
    the tests run)."""

    url: str | None = Field(
        default=None, description="e.g. http://registry:8081 or .../apis/ccompat/v7"
    )
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = Field(
        default=None, description="read password from this file (trailing newline cut)"
    )
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="per request")
    cache_schemas: int = Field(
        default=1000, ge=1, description="schemas kept parsed (least recently used dropped)"
    )
    unknown_schema_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="an id the registry does not know is asked again only after this long "
        "(records naming it meanwhile go to the dead-letter topic without a request)",
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> SchemaRegistryConfig:
        from_file = _read_secret_file(self.password_file, "password_file")
        if from_file is not None:
            if self.password is not None:
                raise ValueError("give password or password_file, not both")
            object.__setattr__(self, "password", from_file)
        if bool(self.username) != bool(self.password):
            raise ValueError("basic auth needs both username and password")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        tls = [n for n in ("ssl_cafile", "ssl_certfile") if getattr(self, n)]
        if tls and self.url is not None and not self.url.startswith("https://"):
            raise ValueError(f"{', '.join(tls)} given for a plain http:// url")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("a client certificate needs both ssl_certfile and ssl_keyfile")
        return self


class ModelsConfig(Frozen):
    """Where topics' models live: ``<store>/<topic>/versions/v000001/...`` and ``CURRENT``."""

    store: str = "models"
    keep_versions: int = Field(
        default=5, ge=2, description="versions kept per topic (the serving one always)"
    )
    reload_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often the daemon looks for a new current version in the store",
    )


class BatchingConfig(Frozen):
    max_batch: int = Field(default=256, ge=1)
    max_delay_ms: int = Field(default=50, ge=0)
    poll_timeout_ms: int = Field(default=200, ge=1)
    commit_interval_ms: int = Field(default=1000, ge=0)
    max_backlog_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="windows waiting for a model; beyond it the topic's partitions pause",
    )
    max_undelivered: int = Field(
        default=10_000,
        ge=1,
        description="alerts and dead letters waiting for a sink; beyond it every topic "
        "pauses until half of them are delivered",
    )
    max_replay_lag: int = Field(
        default=1_000_000,
        ge=1,
        description="a restart re-reads at most this many messages per partition; series "
        "silent for longer rebuild their window from scratch",
    )


class SimulatorConfig(Frozen):
    """The embedded source used when no Kafka is configured."""

    sensors: int = Field(default=4, ge=1)
    rate: float = Field(default=400.0, gt=0, description="events per second, all sensors")
    period: int = Field(default=96, ge=8, description="steps per simulated day")
    noise: float = Field(default=0.05, ge=0)
    anomaly_every: int = Field(default=700, ge=50, description="steps between injections")
    first_anomaly: int | None = Field(
        default=None, ge=0, description="step of the first injection (default: after warm-up)"
    )
    permanent_shift_at: int | None = Field(
        default=None,
        ge=0,
        description="from this step sensor-0's level is 3 amplitudes higher for good",
    )
    scales: tuple[float, ...] | None = Field(
        default=None, description="one factor per sensor: sensors at different magnitudes"
    )
    seed: int = 7
    max_events: int | None = Field(default=None, ge=1, description="stop after this many")

    @model_validator(mode="after")
    def _one_scale_per_sensor(self) -> SimulatorConfig:
        if self.scales is not None and len(self.scales) != self.sensors:
            raise ValueError(
                f"simulator.scales has {len(self.scales)} factors; it needs one per sensor "
                f"({self.sensors})"
            )
        return self


class StreamdetConfig(Frozen):
    kafka: KafkaConfig = KafkaConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    topics: tuple[TopicConfig, ...] = ()
    alerts: AlertsConfig = AlertsConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    schema_registry: SchemaRegistryConfig = SchemaRegistryConfig()
    metrics: MetricsConfig = MetricsConfig()
    models: ModelsConfig = ModelsConfig()
    batching: BatchingConfig = BatchingConfig()

    @model_validator(mode="after")
    def _unique_topics(self) -> StreamdetConfig:
        names = [t.name for t in self.topics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"topic names must be unique; repeated: {', '.join(duplicates)}")
        for k, topic in enumerate(self.topics):
            encoding = topic.format.encoding
            if encoding != "json" and self.schema_registry.url is None:
                raise ValueError(
                    f"topics.{k}.format.encoding: {encoding} needs schema_registry.url (the "
                    "registry its records' schema ids refer to)"
                )
            if topic.format.reader_schema == "latest" and encoding != "avro":
                raise ValueError(
                    f"topics.{k}.format.reader_schema: latest applies to avro only (protobuf "
                    "records are read by field number, JSON has no schema)"
                )
        if self.alerts.delivery == "exactly_once" and not self.kafka.bootstrap_servers:
            raise ValueError(
                "alerts.delivery: exactly_once needs kafka.bootstrap_servers (a Kafka "
                "transaction holds the alerts and the consumed offsets); allowed without "
                "Kafka: at_least_once"
            )
        feedback = self.feedback.topic
        if feedback is not None:
            if not self.kafka.bootstrap_servers:
                raise ValueError("feedback.topic needs kafka.bootstrap_servers (Kafka only)")
            if feedback in names or feedback in (self.alerts.topic, self.dead_letter.topic):
                raise ValueError(
                    f"feedback.topic {feedback!r} must differ from the data, alert and "
                    "dead-letter topics"
                )
        return self


def _format_errors(exc: ValidationError, source: str) -> ConfigError:
    lines = [f"{source} is invalid:"]
    for error in exc.errors():
        path = ".".join(str(p) for p in _without_rule_tag(error["loc"])) or "(top level)"
        message = error["msg"]
        allowed = (error.get("ctx") or {}).get("expected")
        if error["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key (check the spelling; unknown keys are refused)")
            continue
        shown = "(hidden)" if _holds_secret(error["loc"], error["input"]) else repr(error["input"])
        bad = f"{shown} is not valid: " if error["type"] != "missing" else ""
        hint = f" (allowed: {allowed})" if allowed and allowed not in message else ""
        lines.append(f"  {path}: {bad}{message}{hint}")
    return ConfigError("\n".join(lines))


def _without_rule_tag(loc: tuple[Any, ...]) -> list[Any]:
    """pydantic names the chosen rule inside a threshold's path (``threshold.spot.risk``);
    the YAML path has no such level (``threshold.risk``)."""
    parts = list(loc)
    for k in range(len(parts) - 1):
        if parts[k] == "threshold" and parts[k + 1] in RULES:
            del parts[k + 1]
            break
    return parts


def _holds_secret(loc: tuple[Any, ...], value: Any) -> bool:
    """An error about a secret, or about a section holding one, never echoes its input."""
    if any("password" in str(part) for part in loc):
        return True
    text = repr(value)
    return "password" in text or "secret" in text


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the offending text: the line may hold a secret."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _env_value(variable: str, field: str, value: str) -> Any:
    """An override as the operator wrote it: YAML only for lists and mappings."""
    if "password" in field:
        return value
    if value in ("null", "~"):
        return None
    if value.lstrip().startswith(("[", "{")):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"environment variable {variable} is not valid YAML: {_yaml_problem(exc)}"
            ) from None
    return value


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
        node[path[-1]] = _env_value(key, path[-1], value)
    return merged


def load_config_text(
    text: str, source: str = "config.yaml", environ: dict[str, str] | None = None
) -> StreamdetConfig:
    """Parse and validate YAML text (plus environment overrides)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None
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
