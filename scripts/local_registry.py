"""A real schema registry on this machine, without Docker: Apicurio Registry's published
distribution (Maven Central ``io.apicurio:apicurio-registry-app:<version>:zip:all``), run with
its in-memory storage and its Confluent-compatible API at ``/apis/ccompat/v7``.

    python scripts/local_registry.py fetch              # download once (cached)
    python scripts/local_registry.py start DIR [--user NAME --password SECRET]
    python scripts/local_registry.py stop DIR

``start`` prints the Confluent-compatible URL. With a user, every API call needs HTTP basic
auth (Quarkus' embedded users; the tests use it to prove credentials are sent and a refusal is
told apart from a missing schema). ``stop`` stops only the process ``start`` wrote into DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_kafka import free_port, stop_group

VERSION = os.environ.get("STREAMDET_REGISTRY_VERSION", "3.0.9")
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:zip:all"
CCOMPAT = "/apis/ccompat/v7"


def say(message: str) -> None:
    print(f"[local-registry] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = Path(os.environ.get("STREAMDET_CACHE", Path.home() / ".cache" / "streamdet"))
    return base / f"apicurio-registry-{VERSION}"


def fetch() -> Path:
    """The registry's runner jar, downloaded and unpacked once."""
    runner = cache_dir() / f"apicurio-registry-app-{VERSION}-runner.jar"
    marker = cache_dir() / ".complete"
    if marker.exists():
        return runner
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise SystemExit("local-registry: needs 'java' (17+) and 'mvn' on PATH")
    say(f"downloading Apicurio Registry {VERSION} from Maven Central ...")
    started = time.time()
    staging = cache_dir().with_suffix(".download")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={staging}",
        ],
        check=True,
    )
    (archive,) = staging.glob("*.zip")
    shutil.rmtree(cache_dir(), ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(cache_dir())
    shutil.rmtree(staging)
    if not runner.exists():
        raise SystemExit(f"local-registry: {runner.name} is not in {ARTIFACT}")
    marker.write_text(VERSION)
    say(f"fetched in {time.time() - started:.0f}s")
    return runner


def _answers(url: str) -> bool:
    # Whether it answers at all: a test's own certificate is checked by the test's client.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2, context=context):
            return True
    except urllib.error.HTTPError:
        return True  # it answers (401 without credentials)
    except OSError:
        return False


def start(
    run_dir: Path,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 120,
    tls: tuple[Path, Path] | None = None,
) -> str:
    """Start a registry in ``run_dir``; returns its Confluent-compatible URL once it answers.
    ``tls`` (certificate, key; PEM): HTTPS only."""
    runner = fetch()
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        "java",
        "-Xms64m",
        "-Xmx384m",
        "-XX:TieredStopAtLevel=1",  # starts faster; the tests' load is a few schemas
        "-Dquarkus.http.host=127.0.0.1",
        "-Dquarkus.log.level=WARN",
    ]
    if user is not None and password is not None:
        command += [
            "-Dquarkus.security.users.embedded.enabled=true",
            "-Dquarkus.security.users.embedded.plain-text=true",
            f"-Dquarkus.security.users.embedded.users.{user}={password}",
            "-Dquarkus.http.auth.basic=true",
            "-Dquarkus.http.auth.permission.api.paths=/apis/*",
            "-Dquarkus.http.auth.permission.api.policy=authenticated",
        ]
    if tls is None:
        command.append(f"-Dquarkus.http.port={port}")
    else:
        certificate, key = tls
        command += [
            f"-Dquarkus.http.ssl-port={port}",
            f"-Dquarkus.http.port={free_port()}",
            f"-Dquarkus.http.ssl.certificate.files={certificate}",
            f"-Dquarkus.http.ssl.certificate.key-files={key}",
            "-Dquarkus.http.insecure-requests=disabled",
        ]
    command += ["-jar", str(runner)]
    log = (run_dir / "registry.log").open("ab")
    process = subprocess.Popen(
        command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    (run_dir / "registry.pid").write_text(str(process.pid))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{CCOMPAT}"
    (run_dir / "registry.url").write_text(url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the registry exited with code {process.returncode}; see {run_dir}/registry.log"
            )
        if _answers(url):
            return url
        time.sleep(0.3)
    stop(run_dir)
    raise TimeoutError(f"the registry did not answer within {timeout:.0f}s")


def stop(run_dir: Path, timeout: float = 20.0) -> None:
    """Stop the registry ``start`` left in ``run_dir`` (by its pid; nothing else)."""
    pid_file = run_dir / "registry.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGCONT)  # a test may have frozen it
    stop_group(pid, timeout)
    pid_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch")
    starting = commands.add_parser("start")
    starting.add_argument("dir", type=Path)
    starting.add_argument("--user")
    starting.add_argument("--password")
    stopping = commands.add_parser("stop")
    stopping.add_argument("dir", type=Path)
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch())
    elif args.command == "start":
        print(start(args.dir, args.user, args.password))
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
