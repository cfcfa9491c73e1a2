"""How fast the light commands answer: ``check-config``, ``schema``, ``models list``, ``--help``.

Each runs as a user runs it (a fresh ``python -m streamdet.cli`` process), ``--runs`` times
after one warm-up run (so the OS file cache is warm, as on a machine that has run it
before); the median and the slowest are reported, with ``import tensorflow`` timed the same
way beside them (what every command paid before they stopped loading it), and the
loading that ``run``, ``train`` and ``evaluate`` pay: TensorFlow and Keras through
``load_tensorflow()`` (without Keras' scikit-learn and matplotlib imports) beside a plain
``import tensorflow, keras``.

    python -m benchmarks.cli_startup [--runs 10] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], runs: int) -> dict[str, float]:
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)  # warm the cache
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "max_s": max(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    args = parser.parse_args()
    cli = [sys.executable, "-m", "streamdet.cli"]
    commands = {
        "check-config": [*cli, "check-config", "--config", args.config],
        "schema": [*cli, "schema"],
        "models list": [*cli, "models", "list", "--config", args.config],
        "--help": [*cli, "--help"],
        "import tensorflow (for comparison)": [sys.executable, "-c", "import tensorflow"],
        "import tensorflow, keras (plain)": [sys.executable, "-c", "import tensorflow, keras"],
        "load_tensorflow() (run, train, evaluate)": [
            sys.executable,
            "-c",
            "from streamdet.core.tensorflow import load_tensorflow; load_tensorflow()",
        ],
    }
    report = {name: timed(command, args.runs) for name, command in commands.items()}
    for name, figures in report.items():
        print(f"{name:36s} median {figures['median_s']:.2f} s, max {figures['max_s']:.2f} s")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
