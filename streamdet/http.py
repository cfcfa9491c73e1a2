"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the consume loop keeps turning (a stuck loop turns it 503, so
an orchestrator restarts the process). ``/readyz`` answers 200 once the consumer has
partitions assigned and every topic's model is loaded; until then 503 with the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, str]]


def serve(
    host: str, port: int, registry: CollectorRegistry, healthy: Check, ready: Check
) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread and return the server (``.server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
