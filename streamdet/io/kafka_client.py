"""kafka-python settings shared by the consumer and the producers, from ``kafka:`` config."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka.errors import KafkaError

from streamdet.config import KafkaConfig
from streamdet.core.errors import StreamdetError


def client_settings(config: KafkaConfig) -> dict[str, Any]:
    """bootstrap, client id and security settings in kafka-python's names."""
    sec = config.security
    settings: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": config.client_id,
        "security_protocol": sec.protocol,
    }
    if sec.protocol.startswith("SASL") and sec.sasl_password is not None:
        settings |= {
            "sasl_mechanism": sec.sasl_mechanism,
            "sasl_plain_username": sec.sasl_username,
            "sasl_plain_password": sec.sasl_password.get_secret_value(),
        }
    if sec.protocol.endswith("SSL"):
        settings["ssl_check_hostname"] = sec.ssl_check_hostname
        if sec.ssl_password is not None:
            settings["ssl_password"] = sec.ssl_password.get_secret_value()
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(sec, name):
            settings[name] = getattr(sec, name)
    return settings


class _LastFailure(logging.Handler):
    """Remembers why kafka-python's bootstrap attempts failed (it retries, then times out
    with a generic message)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reason = ""
        self._telling = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "fail" not in message.lower():
            return
        # The first telling reason wins over the generic time-out that follows it.
        telling = any(w in message.lower() for w in ("authentic", "sasl", "ssl", "certificate"))
        if not self.reason or (telling and not self._telling):
            self.reason = message[:500]
            self._telling = telling


def _connection_error(config: KafkaConfig, exc: Exception, reason: str) -> StreamdetError:
    """A start-up failure an operator can act on; never includes a secret."""
    sec = config.security
    who = (
        f"{sec.protocol}, {sec.sasl_mechanism} as {sec.sasl_username!r}"
        if sec.protocol.startswith("SASL")
        else sec.protocol
    )
    detail = reason or f"{type(exc).__name__}: {exc}"
    credentials = "the credentials (kafka.security.sasl_username, sasl_password or its _file)"
    hint = "kafka.bootstrap_servers"
    if "authentication" in detail.lower() or "sasl" in detail.lower():
        hint = credentials
    elif "ssl" in detail.lower() or "certificate" in detail.lower():
        hint = "kafka.security.ssl_cafile and the broker's certificate"
    elif sec.protocol.startswith("SASL"):
        # A broker that rejects a login often just closes the socket, before any message.
        hint = f"kafka.bootstrap_servers, then {credentials}"
    return StreamdetError(
        f"cannot connect to Kafka at {config.bootstrap_servers} ({who}): {detail}. Check {hint}."
    )


@contextmanager
def refused_connections(config: KafkaConfig) -> Iterator[None]:
    """Turn a client that cannot connect (wrong address, credentials or CA) into a
    :class:`StreamdetError` that says why and what to check, instead of a generic time-out."""
    failures = _LastFailure()
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(failures)
    try:
        yield
    except KafkaError as exc:
        raise _connection_error(config, exc, failures.reason) from None
    finally:
        kafka_log.removeHandler(failures)
