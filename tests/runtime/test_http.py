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


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) ``sock``."""
    try:
        return sock.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_idle_connections_cost_no_thread_and_never_lock_the_probes_out():
    config = MetricsConfig(port=0, max_connections=4, request_timeout_s=30)
    server = serve(config, registry(), ok, ok)
    before = set(threading.enumerate())
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=5))
        # Each probe evicts the oldest connection still sending its request, at once.
        for _ in range(10):
            assert b'"status": "ok"' in get(f"http://127.0.0.1:{server.server_port}/healthz").read()
        # No thread per connection (threads of other work may end meanwhile).
        assert set(threading.enumerate()) <= before
        assert server.evicted >= 196
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()


def test_a_slowloris_is_cut_off_at_the_request_deadline_while_probes_answer():
    """Clients that send a byte every 0.2 s hold every slot: a per-read timeout would keep
    them forever; the deadline cuts each one off, and probes answer meanwhile."""
    config = MetricsConfig(port=0, max_connections=4, request_timeout_s=1.0)
    server = serve(config, registry(), ok, ok)
    url = f"http://127.0.0.1:{server.server_port}/healthz"
    slow = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(4)]
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    cut_after: dict[int, float] = {}
    started = time.monotonic()
    try:
        for sock in slow:
            sock.setblocking(False)
        byte = 0
        while len(cut_after) < len(slow) and time.monotonic() - started < 10:
            for k, sock in enumerate(slow):
                if k in cut_after:
                    continue
                try:
                    sock.send(request[byte : byte + 1])
                except OSError:
                    cut_after[k] = time.monotonic() - started
                    continue
                if closed_by_server(sock):
                    cut_after[k] = time.monotonic() - started
            byte += 1
            probe_started = time.monotonic()
            assert get(url).status == 200
            assert time.monotonic() - probe_started < 0.5
            time.sleep(0.2)
        assert len(cut_after) == len(slow), "the slow clients were never cut off"
        assert max(cut_after.values()) < 3.0, cut_after
        assert server.timed_out + server.evicted >= len(slow)
    finally:
        for sock in slow:
            sock.close()
        server.shutdown()


def test_methods_heads_and_paths():
    server = serve(MetricsConfig(port=0), registry(), ok, lambda: (False, "no model yet"))
    port = server.server_port
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            get(f"http://127.0.0.1:{port}/readyz")
        assert info.value.code == 503 and b"no model yet" in info.value.read()
        with pytest.raises(urllib.error.HTTPError) as info:
            get(f"http://127.0.0.1:{port}/nothing")
        assert info.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x"), timeout=5
            )
        assert info.value.code == 405
        head = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as answer:
            assert answer.status == 200 and answer.read() == b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"b" * 20_000 + b"\r\n\r\n")
            assert sock.recv(100) == b""  # a head over 16 KiB is refused
    finally:
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
