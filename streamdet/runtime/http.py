"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the consume loop keeps turning (a stuck loop turns it 503, so
an orchestrator restarts the process). ``/readyz`` answers 200 once the broker answers, the
consumer has partitions and every topic's model is loaded; until then 503 with the reason.

The endpoint binds to localhost unless configured otherwise. It can require TLS and HTTP
basic auth; every connection has a read timeout, and at most ``max_connections`` are served
at once (a flood of idle connections cannot grow threads without bound: the extra ones are
closed at once).
"""

from __future__ import annotations

import base64
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamdet.config import MetricsConfig

Check = Callable[[], tuple[bool, str]]


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, config: MetricsConfig) -> None:
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._timeout_s = config.request_timeout_s
        self._tls: ssl.SSLContext | None = None
        if config.tls_certfile and config.tls_keyfile:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(config.tls_certfile, config.tls_keyfile)
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the bound: refuse, do not queue a thread
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            request.settimeout(self._timeout_s)
            if self._tls is not None:
                request = self._tls.wrap_socket(request, server_side=True)
            super().process_request_thread(request, client_address)
        except (OSError, ssl.SSLError):
            self.shutdown_request(request)
        finally:
            self._slots.release()


def serve(
    config: MetricsConfig, registry: CollectorRegistry, healthy: Check, ready: Check
) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread and return the server (``.server_port``)."""
    expected: bytes | None = None
    if config.basic_auth_username and config.basic_auth_password:
        raw = f"{config.basic_auth_username}:{config.basic_auth_password.get_secret_value()}"
        expected = b"Basic " + base64.b64encode(raw.encode())

    class Handler(BaseHTTPRequestHandler):
        timeout = config.request_timeout_s

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            # Probes carry no credentials (kubelet cannot send a secret) and reveal only a
            # status; the metrics need the password when one is configured.
            if expected is not None and path not in ("/healthz", "/readyz"):
                given = (self.headers.get("Authorization") or "").encode()
                if not hmac.compare_digest(given, expected):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="streamdet"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, reason = (healthy if path == "/healthz" else ready)()
                body = json.dumps({"status": "ok" if ok else "unavailable", "reason": reason})
                self._send(200 if ok else 503, body.encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would flood stderr."""

    server = _BoundedServer((config.host, config.port), Handler, config)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
