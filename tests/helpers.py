"""Plain helpers shared by tests (no fixtures, so any scope can call them)."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

# The repository's root (config.yaml, deploy/, docs/, scripts/).
ROOT = Path(__file__).resolve().parents[1]


def make_series(
    n: int = 3000, n_features: int = 2, seed: int = 0, anomalies: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """A seasonal multi-feature series with labelled injected anomalies.

    The anomalies cycle through a spike, a level shift and a frequency change; each
    labels exactly the steps it altered.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float32)
    series = np.stack(
        [
            np.sin(2 * np.pi * t / (25 + 7 * f)) + 0.05 * rng.standard_normal(n)
            for f in range(n_features)
        ],
        axis=1,
    ).astype(np.float32)
    labels = np.zeros(n, dtype=np.int8)
    for k, start in enumerate(anomalies):
        kind = k % 3
        if kind == 0:
            series[start : start + 2, 0] += 4.0
            labels[start : start + 2] = 1
            continue
        if kind == 1:
            series[start : start + 15, -1] += 2.0
        else:
            seg = np.arange(15, dtype=np.float32)
            series[start : start + 15, 0] = np.sin(2 * np.pi * seg / 5)
        labels[start : start + 15] = 1
    return series, labels


def write_daemon_config(
    folder: Path,
    bootstrap: str,
    topic: dict,
    alerts_topic: str,
    dlq_topic: str,
    metrics_port: int,
    cooldown_s: float = 0,
    **sections: dict,
) -> Path:
    """Write a Kafka-mode config.yaml for one topic into ``folder`` and return its path."""
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{topic['name']}"},
        "topics": [topic],
        "alerts": {"topic": alerts_topic, "cooldown_s": cooldown_s, "file": None},
        "dead_letter": {"topic": dlq_topic},
        "metrics": {"port": metrics_port},
        "models": {"store": str(folder / "models")},
        **sections,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``streamdet <args>`` through the command line's own entry point, in this process: the
    argument parsing, the command, its output and its exit code as a user gets them, without
    a second TensorFlow start. Tests of process behaviour (signals, kill -9, start-up,
    imports) run ``streamdet`` as a process instead."""
    from streamdet.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None) * 2
    finally:
        for number, handler in handlers.items():  # ``run`` and ``replay`` install their own
            signal.signal(number, handler)
    return subprocess.CompletedProcess(["streamdet", *args], code, out.getvalue(), err.getvalue())


def _port_band() -> Iterator[int]:
    """Ports below the kernel's ephemeral range, a band of its own per xdist worker.

    A port the kernel hands out for ``bind(0)`` is free only until the daemon that is given
    it binds it: meanwhile the kernel may hand it to another test's daemon or broker, or to a
    client's outgoing connection (CI once lost a run to that). Below the ephemeral range the
    kernel hands out nothing by itself, and each worker counts through its own band.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    width, bands = 400, 30
    start = max(1024, min(20000, low - width * bands)) + (worker % bands) * width
    return itertools.cycle(range(start, min(start + width, low)))


_PORTS = _port_band()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now that no other test of this run is given."""
    for _ in range(400):
        port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in this worker's band")
