"""kafka-python settings shared by the consumer and the producers, from ``kafka:`` config."""

from __future__ import annotations

from typing import Any

from streamdet.config import KafkaConfig


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
