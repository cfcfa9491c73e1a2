"""Time ``streamdet evaluate nab`` on a corpus the size of NAB's full 58 files.

Only an 18-file subset of NAB is on this machine. This builds a NAB-layout corpus of 58
files by repeating the subset's files (largest first for the remainder) under new names,
with their labels, so that its row count is at least the full corpus' (about 365,000 rows),
then runs the command on it once and prints the wall time. The score on this corpus means
nothing (files repeat); only the time does.

    python -m benchmarks.nab_full_size [--data ../shared/data/nab] [--files 58] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_CORPUS_ROWS = 365_000


def build(source: Path, target: Path, n_files: int) -> int:
    """Write a corpus of ``n_files`` into ``target``; returns its row count."""
    labels = json.loads((source / "labels" / "combined_windows.json").read_text())
    files = sorted(
        (path for path in (source / "data").glob("*/*.csv")),
        key=lambda p: -sum(1 for _ in p.open()),
    )
    if not files:
        raise SystemExit(f"{source} holds no data/<category>/<file>.csv")
    (target / "labels").mkdir(parents=True)
    (target / "config").mkdir()
    shutil.copy(source / "config" / "profiles.json", target / "config" / "profiles.json")
    windows, rows = {}, 0
    for k in range(n_files):
        original = files[k % len(files)]
        category = f"{original.parent.name}_copy{k // len(files)}"
        (target / "data" / category).mkdir(parents=True, exist_ok=True)
        shutil.copy(original, target / "data" / category / original.name)
        windows[f"{category}/{original.name}"] = labels[f"{original.parent.name}/{original.name}"]
        rows += sum(1 for _ in original.open()) - 1
    (target / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/nab")
    parser.add_argument("--files", type=int, default=58)
    parser.add_argument("--out", default="eval/nab_full_size")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="nab-full-size-") as folder:
        corpus = Path(folder) / "corpus"
        rows = build(Path(args.data), corpus, args.files)
        print(f"corpus: {args.files} files, {rows} rows (full NAB: about {FULL_CORPUS_ROWS})")
        started = time.perf_counter()
        command = [
            sys.executable, "-m", "streamdet.cli", "evaluate", "nab", "--data", str(corpus),
            "--seeds", "1", "--out", args.out, *extra,
        ]  # fmt: skip
        subprocess.run(command, check=True)
        minutes = (time.perf_counter() - started) / 60
    print(json.dumps({"files": args.files, "rows": rows, "minutes": round(minutes, 1)}))


if __name__ == "__main__":
    main()
