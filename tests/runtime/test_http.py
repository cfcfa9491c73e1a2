"""The metrics endpoint: localhost by default, basic auth, TLS, timeouts, a thread bound."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamdet.config import MetricsConfig
from streamdet.runtime.http import serve


def registry() -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("streamdet_demo", "A demo counter.", registry=r).inc()
    return r


def ok() -> tuple[bool, str]:
    return True, "fine"


def get(url: str, auth: str | None = None, context: ssl.SSLContext | None = None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    return urllib.request.urlopen(request, timeout=5, context=context)


def test_defaults_bind_localhost():
    assert MetricsConfig().host == "127.0.0.1"


def test_basic_auth_is_required_when_configured():
    config = MetricsConfig(port=0, basic_auth_username="prom", basic_auth_password="pw")
    server = serve(config, registry(), ok, ok)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            get(url)
        assert info.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            get(url, "prom:wrong")
        assert b"streamdet_demo_total 1.0" in get(url, "prom:pw").read()
        # Probes stay open: a kubelet cannot send credentials, and they show only a status.
        assert get(f"http://127.0.0.1:{server.server_port}/readyz").status == 200
    finally:
        server.shutdown()


def test_idle_connections_cannot_exhaust_threads_and_time_out():
    config = MetricsConfig(port=0, max_connections=4, request_timeout_s=1)
    server = serve(config, registry(), ok, ok)
    before = threading.active_count()
    idle = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
            idle.append(sock)
        time.sleep(0.5)
        assert threading.active_count() - before <= 4
        time.sleep(1.5)  # the idle ones time out and free their slots
        body = get(f"http://127.0.0.1:{server.server_port}/healthz").read()
        assert b'"status": "ok"' in body
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()


def test_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    config = MetricsConfig(
        port=0, tls_certfile=str(cert), tls_keyfile=str(key), request_timeout_s=2
    )
    server = serve(config, registry(), ok, ok)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{server.server_port}/metrics"
        assert b"streamdet_demo_total" in get(url, context=context).read()
        with pytest.raises(OSError):  # plain HTTP is refused
            get(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
