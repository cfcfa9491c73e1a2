"""The schema registry that Avro and Protobuf topics' schema ids refer to.

A thin layer over confluent-kafka's ``SchemaRegistryClient`` (the REST client, its cache of
schemas by id, basic auth and TLS) that tells the two kinds of failure apart, because the
daemon treats them oppositely:

* the registry answered that it has no schema of that id (HTTP 404 with the registry's own
  error code 40403): the *record* is at fault, and goes to the dead-letter topic
  (:class:`UnknownSchema`);
* anything else (refused connection, timeout, 5xx, 401/403, a 404 without the registry's code,
  i.e. a wrong URL): the *registry* is, and the records wait for it (:class:`RegistryUnavailable`);
  none is dead-lettered for it.

Ids the registry does not know are remembered for ``unknown_schema_ttl_s``: a stream of
records naming made-up ids costs one request per id, not one per record.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache

from streamdet.core.errors import StreamdetError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import Schema

    from streamdet.config import SchemaRegistryConfig

log = logging.getLogger("streamdet.schema_registry")

# The registry's error code for "no schema with this id" (Confluent's REST API; Apicurio's
# compatible API answers it too).
SCHEMA_NOT_FOUND = 40403
SUBJECT_OR_VERSION_NOT_FOUND = (40401, 40402)
# How long the subject's latest version is trusted before it is asked again.
LATEST_TTL_S = 60.0


class UnknownSchema(StreamdetError):
    """The registry has no schema of this id (or subject): the record is at fault."""


class RegistryUnavailable(StreamdetError):
    """The registry cannot answer now; whatever needs it waits."""


def client_settings(config: SchemaRegistryConfig) -> dict[str, Any]:
    """confluent-kafka's client configuration for ``config`` (without secrets in logs)."""
    settings: dict[str, Any] = {
        "url": config.url,
        "timeout": config.timeout_s,
        "cache.capacity": config.cache_schemas,
        # The daemon waits and retries itself (the records stay in Kafka meanwhile); a
        # client retrying inside a call would hold up every other topic's messages.
        "max.retries": 0,
    }
    if config.username and config.password is not None:
        settings["basic.auth.user.info"] = f"{config.username}:{config.password.get_secret_value()}"
    if config.ssl_cafile:
        settings["ssl.ca.location"] = config.ssl_cafile
    if config.ssl_certfile:
        settings["ssl.certificate.location"] = config.ssl_certfile
        settings["ssl.key.location"] = config.ssl_keyfile
    return settings


class SchemaRegistry:
    """Schemas by id and subjects' latest versions, with the failures told apart."""

    def __init__(self, config: SchemaRegistryConfig) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = config.url
        self.client = SchemaRegistryClient(client_settings(config))
        self._unknown: TTLCache[int, str] = TTLCache(
            maxsize=10_000, ttl=max(config.unknown_schema_ttl_s, 1e-9)
        )
        self._latest: TTLCache[str, tuple[int, Schema]] = TTLCache(
            maxsize=config.cache_schemas, ttl=LATEST_TTL_S
        )
        self.parsed: LRUCache[tuple[str, int], Any] = LRUCache(maxsize=config.cache_schemas)
        # What /metrics and /readyz show.
        self.up = True
        self.problem: str | None = None
        self.requests = 0
        self.failures = 0
        self.unknown_ids = 0

    def schema(self, schema_id: int) -> Schema:
        """The schema registered under ``schema_id``."""
        if schema_id in self._unknown:
            raise UnknownSchema(self._unknown[schema_id])
        try:
            return self._ask(lambda: self.client.get_schema(schema_id), f"schema id {schema_id}")
        except UnknownSchema as exc:
            self.unknown_ids += 1
            self._unknown[schema_id] = str(exc)
            raise

    def latest(self, subject: str) -> tuple[int, Schema]:
        """The id and schema of ``subject``'s latest version (trusted for a minute)."""
        cached = self._latest.get(subject)
        if cached is not None:
            return cached
        registered = self._ask(
            lambda: self.client.get_latest_version(subject), f"subject {subject!r}"
        )
        answer = (registered.schema_id, registered.schema)
        self._latest[subject] = answer
        return answer

    def version(self, subject: str, version: int) -> Schema:
        """A schema another one references (by subject and version)."""
        registered = self._ask(
            lambda: self.client.get_version(subject, version),
            f"subject {subject!r} version {version}",
        )
        return registered.schema

    def _ask(self, request: Any, what: str) -> Any:
        from confluent_kafka.schema_registry import SchemaRegistryError

        self.requests += 1
        started = time.monotonic()
        try:
            answer = request()
        except SchemaRegistryError as exc:
            code = exc.error_code
            if exc.http_status_code == 404 and (
                code == SCHEMA_NOT_FOUND or code in SUBJECT_OR_VERSION_NOT_FOUND
            ):
                self._answered()
                raise UnknownSchema(f"the registry has no {what}") from None
            self._failed(f"{what}: HTTP {exc.http_status_code} ({_refusal(exc)})")
        except Exception as exc:  # connection refused, timeout, TLS: httpx's many types
            self._failed(f"{what}: {type(exc).__name__}: {exc}"[:300])
        self._answered()
        log.debug("%s read from the registry in %.3fs", what, time.monotonic() - started)
        return answer

    def _answered(self) -> None:
        if not self.up:
            log.warning("schema registry %s answers again", self.url)
        self.up = True
        self.problem = None

    def _failed(self, problem: str) -> None:
        self.failures += 1
        if self.up or problem != self.problem:
            log.warning("schema registry %s cannot answer: %s", self.url, problem)
        self.up = False
        self.problem = problem
        raise RegistryUnavailable(f"schema registry {self.url}: {problem}") from None


def _refusal(exc: Any) -> str:
    status = exc.http_status_code
    if status in (401, 403):
        return "credentials refused: check schema_registry.username and password"
    if status == 404:
        return "not a schema registry API at this url"
    return str(exc.error_message)[:200]
