"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the consume loop keeps turning (a stuck loop turns it 503, so
an orchestrator restarts the process). ``/readyz`` answers 200 once the broker answers, the
consumer has partitions and every topic's model is loaded; until then 503 with the reason.

The endpoint binds to localhost unless configured otherwise. It can require TLS and HTTP
basic auth. It is served by one asyncio loop in a thread of its own, so a slow client costs a
coroutine, not a thread, and cannot starve the probes:

- every request has a **deadline** (``request_timeout_s``) from the moment its connection is
  accepted to the last byte of the answer; a client that sends a byte now and then (a
  slowloris) is cut off when it passes, not kept alive by each byte;
- at most ``max_connections`` connections are open; one more **evicts the oldest connection
  that has not finished sending its request**, so a probe (a whole request in one packet)
  gets in even while slow clients hold every slot;
- one request per connection (``Connection: close``); request heads over 16 KiB are refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamdet.config import MetricsConfig

Check = Callable[[], tuple[bool, str]]
MAX_HEAD_BYTES = 16_384
PROBES = ("/healthz", "/readyz")


class _Connection:
    """One accepted connection: its writer and whether its request is read yet."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.request_read = False


class MetricsServer:
    """The running endpoint: ``server_port`` (the bound port) and ``shutdown()``."""

    def __init__(
        self, config: MetricsConfig, registry: CollectorRegistry, healthy: Check, ready: Check
    ) -> None:
        self._config = config
        self._registry = registry
        self._checks = {"/healthz": healthy, "/readyz": ready}
        self._expected_auth: bytes | None = None
        if config.basic_auth_username and config.basic_auth_password:
            raw = f"{config.basic_auth_username}:{config.basic_auth_password.get_secret_value()}"
            self._expected_auth = b"Basic " + base64.b64encode(raw.encode())
        self._tls: ssl.SSLContext | None = None
        if config.tls_certfile and config.tls_keyfile:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(config.tls_certfile, config.tls_keyfile)
        self._open: list[_Connection] = []  # oldest first
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self.evicted = 0
        self.timed_out = 0
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(started, failure), name="http", daemon=True
        )
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        assert self._server is not None
        self.server_port: int = self._server.sockets[0].getsockname()[1]

    # ---- the loop's thread ---------------------------------------------------------------
    def _run(self, started: threading.Event, failure: list[BaseException]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(
                    self._accept,
                    self._config.host,
                    self._config.port,
                    ssl=self._tls,
                    ssl_handshake_timeout=self._config.request_timeout_s if self._tls else None,
                    backlog=128,
                    limit=MAX_HEAD_BYTES,
                )
            )
        except BaseException as exc:  # the port is taken, a bad host: raised in the caller
            failure.append(exc)
            started.set()
            return
        started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        finished = False
        if len(self._open) >= self._config.max_connections:
            waiting = next((c for c in self._open if not c.request_read), None)
            if waiting is None:  # every slot is answering a whole request: refuse this one
                writer.transport.abort()
                return
            self._open.remove(waiting)
            waiting.writer.transport.abort()
            self.evicted += 1
        self._open.append(connection)
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                await self._serve(reader, connection)
            finished = True
        except TimeoutError:
            self.timed_out += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away, sent garbage or a head over the limit
        finally:
            with contextlib.suppress(ValueError):
                self._open.remove(connection)
            if finished:
                writer.close()
            else:  # past its deadline or broken: nothing more is sent or waited for
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        connection.request_read = True
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._send(connection, HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain")
            return
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            await self._send(connection, HTTPStatus.METHOD_NOT_ALLOWED, b"GET only\n", "text/plain")
            return
        path = target.split("?", 1)[0]
        # Probes carry no credentials (kubelet cannot send a secret) and reveal only a
        # status; the metrics need the password when one is configured.
        if self._expected_auth is not None and path not in PROBES:
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected_auth):
                await self._send(
                    connection,
                    HTTPStatus.UNAUTHORIZED,
                    b"",
                    "text/plain",
                    {"WWW-Authenticate": 'Basic realm="streamdet"'},
                )
                return
        if path == "/metrics":
            # The collectors read the daemon's state: off the loop, so probes never wait.
            body = await asyncio.get_running_loop().run_in_executor(
                None, generate_latest, self._registry
            )
            await self._send(connection, HTTPStatus.OK, body, CONTENT_TYPE_LATEST, head=method)
        elif path in PROBES:
            ok, reason = self._checks[path]()
            body = json.dumps({"status": "ok" if ok else "unavailable", "reason": reason})
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            await self._send(connection, status, body.encode(), "application/json", head=method)
        else:
            await self._send(
                connection,
                HTTPStatus.NOT_FOUND,
                b"not found: try /metrics, /healthz or /readyz\n",
                "text/plain",
            )

    @staticmethod
    async def _send(
        connection: _Connection,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
        head: str = "GET",
    ) -> None:
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (extra or {}).items()),
        ]
        writer = connection.writer
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if head != "HEAD":
            writer.write(body)
        await writer.drain()

    # ---- any thread --------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop listening and close every open connection."""
        if not self._loop.is_running():
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for connection in list(self._open):
                connection.writer.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def serve(
    config: MetricsConfig, registry: CollectorRegistry, healthy: Check, ready: Check
) -> MetricsServer:
    """Start the endpoint in a thread of its own and return it (``.server_port``)."""
    return MetricsServer(config, registry, healthy, ready)
