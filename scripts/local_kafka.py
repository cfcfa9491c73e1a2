#!/usr/bin/env python3
"""Provision and run a real single-node Apache Kafka broker (KRaft) from Maven Central jars.

No Docker needed: Maven fetches ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies into a cache, ``kafka.tools.StorageTool format`` prepares a KRaft log
directory, and ``kafka.Kafka`` runs the combined broker/controller on loopback.

    python scripts/local_kafka.py fetch              # download jars (cached)
    python scripts/local_kafka.py start [--port N]   # prints the bootstrap address
    python scripts/local_kafka.py stop

The cache lives in ``$STREAMDET_CACHE`` (default ``~/.cache/streamdet``). Standard library
only, so the test fixture and the Makefile can call it before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

KAFKA_VERSION = os.environ.get("STREAMDET_KAFKA_VERSION", "3.9.1")
SLF4J_VERSION = "1.7.36"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamdet</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J = """log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""

SERVER = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
"""


def _cluster_id() -> str:
    """A random KRaft cluster id. Never one starting with '-': StorageTool would read it as
    an option and fail (as Kafka's own ``random-uuid`` avoids; 1 id in 64 did this)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def cache_dir() -> Path:
    base = Path(os.environ.get("STREAMDET_CACHE", Path.home() / ".cache" / "streamdet"))
    return base / f"kafka-{KAFKA_VERSION}"


def say(message: str) -> None:
    print(f"[local-kafka] {message}", file=sys.stderr, flush=True)


def fetch() -> Path:
    """Download the broker's jars once; later calls reuse the cache."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise SystemExit("local-kafka: needs 'java' (17+) and 'mvn' on PATH to fetch the broker")
    work = cache_dir() / "maven"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(POM.format(kafka=KAFKA_VERSION, slf4j=SLF4J_VERSION))
    say(f"downloading Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ...")
    started = time.time()
    tmp = cache_dir() / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        check=True,
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text(KAFKA_VERSION)
    jars = len(list(libs.glob("*.jar")))
    say(f"fetched {jars} jars in {time.time() - started:.0f}s")
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited early with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the Kafka broker did not open port {port} within {timeout:.0f}s")


def _java(run_dir: Path) -> list[str]:
    return [
        "java",
        "-Xms256m",
        "-Xmx1g",
        f"-Dlog4j.configuration=file:{run_dir / 'log4j.properties'}",
        "-cp",
        f"{fetch()}/*",
    ]


class PortTaken(RuntimeError):
    """Another process bound the broker's port between choosing it and the broker binding
    it (two test workers choosing ports at once)."""


def _launch(run_dir: Path, port: int, timeout: float) -> tuple[str, int]:
    """Start the broker and wait for its own "Kafka Server started" line: an open port alone
    may belong to another process that took the port first (the broker then exits with
    "Address already in use", raised as :class:`PortTaken`)."""
    log = run_dir / "server.log"
    seen = log.stat().st_size if log.exists() else 0
    out = (run_dir / "stdout.log").open("ab")
    process = subprocess.Popen(
        [*_java(run_dir), "kafka.Kafka", str(run_dir / "server.properties")],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (run_dir / "broker.pid").write_text(str(process.pid))
    deadline = time.time() + timeout
    while True:
        written = log.read_bytes()[seen:] if log.exists() else b""
        if b"Address already in use" in written:
            stop_group(process.pid)
            raise PortTaken(f"a port of the broker in {run_dir} was taken by another process")
        if b"Kafka Server started" in written:
            break
        if process.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited early with code {process.returncode}")
        if time.time() > deadline:
            raise TimeoutError(f"the Kafka broker did not start within {timeout:.0f}s")
        time.sleep(0.3)
    wait_for_port(port, max(deadline - time.time(), 1.0), process)
    bootstrap = f"127.0.0.1:{port}"
    (run_dir / "bootstrap").write_text(bootstrap)
    say(f"broker up at {bootstrap} (pid {process.pid}, logs in {run_dir})")
    return bootstrap, process.pid


SASL_SSL = """listeners=PLAINTEXT://127.0.0.1:{port},\
SASL_SSL://127.0.0.1:{secure_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
"""


def start(
    run_dir: Path,
    port: int | None = None,
    timeout: float = 90.0,
    sasl_ssl: dict | None = None,
) -> tuple[str, int]:
    """:func:`start_once`, again on fresh ports (up to three times) when another process
    took one of the chosen ports first."""
    for _ in range(2):
        try:
            return start_once(run_dir, port, timeout, sasl_ssl)
        except PortTaken:
            if port is not None:
                raise
            say("a chosen port was taken meanwhile; starting again on fresh ports")
    return start_once(run_dir, port, timeout, sasl_ssl)


def start_once(
    run_dir: Path,
    port: int | None = None,
    timeout: float = 90.0,
    sasl_ssl: dict | None = None,
) -> tuple[str, int]:
    """Format a fresh KRaft log dir in ``run_dir`` and start the broker in the background.

    ``sasl_ssl`` adds a SASL_SSL listener with SCRAM-SHA-512: ``{"keystore": PEM file with
    the broker's PKCS#8 key and certificate chain, "users": {name: password}}``; its address
    is written to ``run_dir/secure_bootstrap``. Returns the PLAINTEXT bootstrap address and
    the broker's process id.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    controller_port = free_port()
    log_dir = run_dir / "data"
    shutil.rmtree(log_dir, ignore_errors=True)
    config = run_dir / "server.properties"
    text = SERVER.format(port=port, controller_port=controller_port, log_dir=log_dir)
    scram: list[str] = []
    if sasl_ssl is not None:
        secure_port = free_port()
        kept = [
            line
            for line in text.splitlines()
            if not line.startswith(("listeners=", "advertised.listeners=", "listener.security"))
        ]
        text = (
            "\n".join(kept)
            + "\n"
            + SASL_SSL.format(
                port=port,
                secure_port=secure_port,
                controller_port=controller_port,
                keystore=sasl_ssl["keystore"],
            )
        )
        for name, password in sasl_ssl["users"].items():
            scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        (run_dir / "secure_bootstrap").write_text(f"127.0.0.1:{secure_port}")
    config.write_text(text)
    (run_dir / "log4j.properties").write_text(LOG4J.format(log=run_dir / "server.log"))
    cluster_id = _cluster_id()
    subprocess.run(
        [
            *_java(run_dir),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
            *scram,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return _launch(run_dir, port, timeout)


def resume(run_dir: Path, timeout: float = 90.0) -> tuple[str, int]:
    """Start again a broker that :func:`stop` stopped: same ports, same data (an outage)."""
    port = int((run_dir / "bootstrap").read_text().rsplit(":", 1)[1])
    return _launch(run_dir, port, timeout)


def stop(run_dir: Path, timeout: float = 20.0) -> None:
    """Stop the broker started in ``run_dir`` (SIGTERM, then SIGKILL)."""
    pid_file = run_dir / "broker.pid"
    if not pid_file.exists():
        return
    stop_group(int(pid_file.read_text()), timeout)
    pid_file.unlink(missing_ok=True)


def stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group ``pid`` leads (a server started in its own session), then
    SIGKILL it if it outlives ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    _alive(pid)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs. A broker this process started stays a zombie (and answers
    signal 0) until it is reaped, so an exited child is reaped here."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:  # started by another process: signal 0 tells
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch", "start", "stop"])
    parser.add_argument("--dir", default=str(cache_dir() / "run"), help="run directory")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch())
    elif args.command == "start":
        bootstrap, _ = start(Path(args.dir), args.port)
        print(bootstrap)
    else:
        stop(Path(args.dir))


if __name__ == "__main__":
    main()
