"""``--seeds N`` for every ``evaluate`` command: the same run over N seeds, mean and spread.

A single run of a neural detector says little (two runs of one command have differed by
0.08 in F1). :func:`over_seeds` runs a benchmark for seeds ``first .. first + N - 1``, each
into its own folder, and :func:`aggregate` turns every number the runs share into its mean,
sample standard deviation and the values themselves.

>>> summary = aggregate([{"f1": 0.8, "name": "x"}, {"f1": 0.9, "name": "x"}])
>>> round(summary["f1"]["mean"], 3), round(summary["f1"]["sd"], 4), summary["name"]
(0.85, 0.0707, 'x')
>>> format_spread(summary["f1"])
'0.8500 ± 0.0707'
>>> aggregate([{"parts": [{"auc": 1.0}]}, {"parts": [{"auc": 0.5}]}])["parts"][0]["auc"]["mean"]
0.75
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, stderr_progress


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate(runs: list[Any]) -> Any:
    """Numbers become ``{"mean", "sd", "values"}``; dicts and lists of dicts (segments,
    attacks) are walked; anything else is taken from the first run (names, protocols,
    lists of numbers such as thresholds or indices)."""
    first = runs[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(r, dict) and k in r for r in runs)]
        return {k: aggregate([r[k] for r in runs]) for k in keys}
    if (
        isinstance(first, list)
        and first
        and all(isinstance(r, list) and len(r) == len(first) for r in runs)
        and all(isinstance(item, dict) for item in first)
    ):
        return [aggregate([r[k] for r in runs]) for k in range(len(first))]
    if all(_is_number(r) for r in runs):
        values = [float(r) for r in runs]
        finite = [v for v in values if math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        sd = (
            math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
            if len(finite) > 1
            else 0.0
        )
        return {"mean": mean, "sd": sd, "values": values}
    return first


def is_spread(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"mean", "sd", "values"}


def format_spread(value: Any, digits: int = 4) -> str:
    """``mean ± sd`` for an aggregated number, the value itself otherwise."""
    if is_spread(value):
        return f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"
    if _is_number(value):
        return f"{value:.{digits}f}"
    return str(value)


FINISHED_RUN = "finished_run.json"


def finished_run(folder: Path, seed: int, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The result a run with these ``settings`` left in ``folder`` for ``seed``, if any.

    A finished run of other settings is refused, not silently mixed into the spread.
    """
    path = folder / FINISHED_RUN
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        record["result"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInputError(
            f"--resume: {path} is not a finished run streamdet wrote; delete it to run "
            "that seed again"
        ) from None
    if record.get("seed") != seed or record.get("settings") != settings:
        theirs = record.get("settings") or {}
        differ = sorted(
            k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k)
        ) or ["seed"]
        raise InvalidInputError(
            f"--resume: {path} is a run with other settings ({', '.join(differ)} differ); "
            "choose another --out or drop --resume to run every seed again"
        )
    result: dict[str, Any] = record["result"]
    return result


def over_seeds(
    run_one: Callable[[int, Path], dict[str, Any]],
    out: str | Path,
    *,
    seeds: int,
    first_seed: int = 0,
    name: str = "summary",
    progress: ProgressFn = stderr_progress,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run ``run_one(seed, folder)`` for each seed; write and return the aggregate.

    With one seed the run writes into ``out`` itself; with several, into ``out/seed<k>``,
    and ``out/<name>_seeds.json`` holds the aggregate. Each finished seed leaves its result
    and ``settings`` (the command's options) in ``finished_run.json``; with ``resume`` a
    seed whose folder holds a finished run of the same settings is not run again, so an
    interrupted multi-hour evaluation continues where it stopped.

    >>> import tempfile
    >>> calls = []
    >>> def run_one(seed, folder):
    ...     calls.append(seed)
    ...     return {"auc": 0.9 + seed / 100}
    >>> out = tempfile.mkdtemp()
    >>> _ = over_seeds(run_one, out, seeds=2, settings={"epochs": 5}, progress=print)
    seed 0 (1/2) into ...seed0
    seed 1 (2/2) into ...seed1
    >>> summary = over_seeds(run_one, out, seeds=3, settings={"epochs": 5}, resume=True,
    ...                      progress=lambda line: None)
    >>> calls, summary["auc"]["values"]
    ([0, 1, 2], [0.9, 0.91, 0.92])
    >>> _ = (Path(out) / "seed2" / FINISHED_RUN).write_text('{"seed": 2, "sett')
    >>> over_seeds(run_one, out, seeds=3, settings={"epochs": 5}, resume=True,
    ...            progress=lambda line: None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    streamdet.core.errors.InvalidInputError: --resume: ...finished_run.json is not a finished...
    """
    if seeds < 1:
        raise InvalidInputError(f"--seeds must be at least 1; got {seeds}")
    root = Path(out)
    settings = dict(settings or {})
    runs = []
    for k in range(seeds):
        seed = first_seed + k
        folder = root if seeds == 1 else root / f"seed{seed}"
        done = finished_run(folder, seed, settings) if resume else None
        if done is not None:
            progress(f"seed {seed} ({k + 1}/{seeds}): finished before in {folder}, reused")
            runs.append(done)
            continue
        if seeds > 1:
            progress(f"seed {seed} ({k + 1}/{seeds}) into {folder}")
        result = run_one(seed, folder)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"seed": seed, "settings": settings, "result": result}
        # Written beside and renamed: a run killed mid-write leaves no half file to resume.
        partial = folder / (FINISHED_RUN + ".partial")
        partial.write_text(json.dumps(record, indent=2, default=float))
        partial.replace(folder / FINISHED_RUN)
        # As a reused run reads back, so fresh and reused runs aggregate alike.
        runs.append(json.loads(json.dumps(result, default=float)))
    summary = aggregate(runs)
    summary["seeds"] = [first_seed + k for k in range(seeds)]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}_seeds.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
