"""SASL_SSL with SCRAM-SHA-512 over TLS against a real broker of this module's own, with
certificates generated here: good credentials consume and alert; wrong ones make
``streamdet run`` refuse to start with a clear message that never shows the password."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from tests.conftest import _load_local_kafka
from tests.daemon.test_faults import (
    caught,
    daemon_config,
    produce,
    stream,
    trained_model,
)
from tests.daemon_helpers import AlertReader, start_daemon, stop_daemon

pytestmark = pytest.mark.kafka
__all__ = ["trained_model"]

USER, PASSWORD = "streamdet", "correct horse #battery"


def make_certificates(folder: Path) -> tuple[Path, Path]:
    """A throw-away CA, and the broker's key and certificate (for 127.0.0.1) signed by it."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=streamdet-test-ca", "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "broker.key", "-out", "broker.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "broker.crt")  # fmt: skip
    keystore = folder / "broker.pem"  # PKCS#8 key + certificate chain, as Kafka's PEM store
    keystore.write_text(
        "".join((folder / name).read_text() for name in ("broker.key", "broker.crt", "ca.pem"))
    )
    return folder / "ca.pem", keystore


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("secure")
    ca, keystore = make_certificates(root / "tls")
    local_kafka = _load_local_kafka()
    run_dir = root / "broker"
    plaintext, _ = local_kafka.start(
        run_dir, sasl_ssl={"keystore": str(keystore), "users": {USER: PASSWORD}}
    )
    try:
        yield plaintext, (run_dir / "secure_bootstrap").read_text(), ca
    finally:
        local_kafka.stop(run_dir)


def secure_config(folder: Path, secure: str, ca: Path, password: str, model: Path) -> Path:
    """A daemon on the SASL_SSL listener, its password in a file (as a mounted secret)."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "sasl-password"
    secret.write_text(password + "\n")
    security = {
        "protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "sasl_password_file": str(secret),
        "ssl_cafile": str(ca),
    }
    return daemon_config(
        folder, secure, "sensors", model, alerts="alerts", dlq="dlq", kafka={"security": security}
    )


def test_scram_over_tls_consumes_and_alerts(secure_broker, tmp_path, trained_model):
    plaintext, secure, ca = secure_broker
    admin = KafkaAdminClient(bootstrap_servers=plaintext)
    admin.create_topics([NewTopic(n, 1, 1) for n in ("sensors", "alerts", "dlq")])
    admin.close()
    produce(plaintext, "sensors", stream(range(500), {400}))
    folder = tmp_path / "good"
    config = secure_config(folder, secure, ca, PASSWORD, trained_model)
    reader = AlertReader(plaintext, "alerts")
    log = folder / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(lambda got: caught(got, 400), 180, daemon, log)
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    assert PASSWORD not in log.read_text()


def test_wrong_credentials_refuse_to_start_with_a_clear_message(
    secure_broker, tmp_path, trained_model
):
    _, secure, ca = secure_broker
    wrong = "not the password"
    folder = tmp_path / "wrong"
    config = secure_config(folder, secure, ca, wrong, trained_model)
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "streamdet.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"streamdet: cannot connect to Kafka at {secure}"), last
    assert f"SCRAM-SHA-512 as '{USER}'" in last and "credentials" in last, last
    assert wrong not in done.stderr + done.stdout
    assert time.time() - started < 120
