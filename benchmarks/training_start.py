"""What a training pays before it learns: the first epoch against the later ones.

``streamdet train`` runs as a user runs it (a fresh process, the default config's topic
with its detector swapped in) on simulated sensors written to a CSV, ``--runs`` times per
detector. Each epoch's line on stderr carries its seconds; the first epoch's includes
tracing the training step (``tf.function``), the later ones are the step itself. A
retraining in the daemon pays the same first epoch each time it runs.

    python -m benchmarks.training_start [--runs 3] [--epochs 8] [--events 4000]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from streamdet.io.sources.simulator import SensorSimulator

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^(?:\[[\d:]+\] )?(.*?) ?epoch (\d+)/\d+ .*\((\d+(?:\.\d+)?)s\)$")


def write_inputs(folder: Path, detector: str, epochs: int, events: int) -> tuple[Path, Path]:
    simulator = SensorSimulator(4, 96, 0.05, 10**9, 1)
    rows = ["sensor,ts,value"] + [
        f"{e['sensor']},{e['ts']},{e['value']}"
        for e in (simulator.next_event() for _ in range(events))
    ]
    data = folder / "data.csv"
    data.write_text("\n".join(rows) + "\n")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    topic = config["topics"][0]
    topic["detector"] = {"name": detector, "params": {"epochs": epochs}}
    if detector == "vae_lstm":
        topic["detector"]["params"] = {"epochs_vae": epochs, "epochs_lstm": epochs}
    config["models"]["store"] = str(folder / "models")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, data


def epoch_seconds(stderr: str) -> dict[str, list[float]]:
    """Seconds of each epoch, per training phase (the text before ``epoch``)."""
    phases: dict[str, list[float]] = {}
    for line in stderr.splitlines():
        found = EPOCH_LINE.search(line)
        if found:
            phase = found.group(1).rsplit(": ", 1)[-1] or "train"
            phases.setdefault(phase, []).append(float(found.group(3)))
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--detectors", nargs="+", default=["seq2seq", "vae_lstm"])
    args = parser.parse_args()
    report: dict[str, dict[str, dict[str, float]]] = {}
    for detector in args.detectors:
        firsts: dict[str, list[float]] = {}
        laters: dict[str, list[float]] = {}
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as scratch:
                config, data = write_inputs(Path(scratch), detector, args.epochs, args.events)
                topic = yaml.safe_load(config.read_text())["topics"][0]["name"]
                command = ["train", "--config", str(config), "--topic", topic]
                done = subprocess.run(
                    [sys.executable, "-m", "streamdet.cli", *command, "--from-file", str(data)],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
            if done.returncode != 0:
                raise SystemExit(f"{detector}: streamdet train failed:\n{done.stderr[-2000:]}")
            for phase, seconds in epoch_seconds(done.stderr).items():
                firsts.setdefault(phase, []).append(seconds[0])
                laters.setdefault(phase, []).extend(seconds[1:])
            print(f"{detector}: run {run + 1}/{args.runs} done", file=sys.stderr)
        report[detector] = {
            phase: {
                "first_epoch_s": statistics.median(firsts[phase]),
                "later_epoch_s": statistics.median(laters[phase]),
                "ratio": statistics.median(firsts[phase]) / statistics.median(laters[phase]),
            }
            for phase in firsts
            if laters.get(phase)
        }
        for phase, figures in report[detector].items():
            print(
                f"{phase:24s} first epoch {figures['first_epoch_s']:.2f} s, later epochs "
                f"{figures['later_epoch_s']:.2f} s (median), ratio {figures['ratio']:.1f}"
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
