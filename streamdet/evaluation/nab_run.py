"""``streamdet evaluate nab``: any NAB-layout corpus, each file replayed through the daemon.

Every file is one topic of one series, replayed in order through :class:`Application` with a
:class:`ReplaySource`: the same decoder, windows, model lifecycle (warm-up on the
probationary period, retraining on recent normal history, shadow comparison, promotion) and
threshold policy as live traffic. The replay is synchronous (a training blocks the loop), so
a file gives the same result on any machine; live, the same trainings run in the background
and a promoted model starts serving a few batches later.

Two figures come out of one replay:

- **NAB protocol**: each row's score is the policy's severity (1 = the policy's threshold)
  of the window ending there, passed through :class:`RisingEdge` over the cooldown's length
  (the cooldown made threshold-free), and NAB picks one threshold per profile over the
  corpus, as for every detector on its scoreboard;
- **daemon alerts**: the alerts the daemon published with its configured threshold and
  cooldown, scored as they are (what an operator would have been paged with).
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.config import StreamdetConfig
from streamdet.detectors import DETECTORS
from streamdet.evaluation import plots
from streamdet.evaluation.nab import (
    CostProfile,
    FileScores,
    NABFile,
    load_corpus,
    load_profiles,
    normalised_score,
)
from streamdet.progress import ProgressFn, stderr_progress
from streamdet.sinks.alerts import JsonLinesAlertSink
from streamdet.sinks.dead_letter import JsonLinesDeadLetterSink
from streamdet.sinks.scores import ScoreRecorder
from streamdet.sources.replay import ReplaySource
from streamdet.thresholds import RisingEdge

PUBLISHED_STANDARD = {
    "note": "NAB scoreboard, full 58-file corpus, standard profile",
    "ARTime": 74.9,
    "Numenta HTM": 70.1,
    "contextOSE": 69.9,
    "knncad": 58.0,
    "randomCutForest": 51.7,
    "random": 16.8,
}

# The window a detector without its own length (``seq_len``, ``window``...) scores.
DEFAULT_SEQ_LEN = 32
# Smaller, faster models than the library defaults (NAB files are a few thousand rows); a
# detector not named here runs with its own defaults.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "seq2seq": {"seq_len": 32, "latent_dim": 32, "epochs": 25, "batch_size": 32},
    "vae_lstm": {
        "window": 16,
        "n_windows": 4,
        "code_size": 6,
        "epochs_vae": 30,
        "epochs_lstm": 30,
        "batch_size": 32,
        "learning_rate_vae": 1e-3,
        "learning_rate_lstm": 1e-3,
    },
}


@dataclass(frozen=True)
class Lifecycle:
    """How each file's topic is run: threshold policy, cooldown and retraining.

    ``retrain_every`` (events; None: the frozen model of the warm-up) and the other
    retraining settings map onto the topic's ``retrain`` config; ``edge_window`` is the
    cooldown in rows (converted to event time with the file's median sampling interval).
    """

    policy: str = "likelihood"
    likelihood: float = 0.9999
    history: int = 2000
    risk: float = 1e-3
    edge_window: int = 400
    retrain_every: int | None = 4000
    retrain_history: int = 4000
    retrain_epochs: int = 3

    @property
    def continual(self) -> bool:
        return self.retrain_every is not None


def _context(detector_name: str, params: dict[str, Any]) -> int:
    """Rows before the first scorable one."""
    return DETECTORS[detector_name].context_length(params, DEFAULT_SEQ_LEN)


def _median_interval_s(nab_file: NABFile) -> float:
    times = np.array(nab_file.timestamps, dtype="datetime64[s]").astype(np.int64)
    steps = np.diff(times)
    return float(np.median(steps)) if len(steps) else 1.0


def file_config(
    nab_file: NABFile,
    detector: str,
    params: dict[str, Any],
    lifecycle: Lifecycle,
    store: Path,
) -> StreamdetConfig:
    """The daemon config a user would write to watch this file's series."""
    retrain: dict[str, Any] = {}
    if lifecycle.retrain_every is not None:
        retrain = {
            "every_events": lifecycle.retrain_every,
            "min_events_between": lifecycle.retrain_every,
            "history_events": lifecycle.retrain_history,
            "epochs": lifecycle.retrain_epochs,
        }
    cooldown_s = lifecycle.edge_window * _median_interval_s(nab_file)
    topic = {
        "name": "nab",
        "format": {"series_key": None, "timestamp_field": "timestamp", "value_fields": ["value"]},
        "window": {"seq_len": _context(detector, params)},
        "detector": {"name": detector, "params": params, "warmup_events": nab_file.probation},
        "threshold": {
            "policy": lifecycle.policy,
            "likelihood": lifecycle.likelihood,
            "history": lifecycle.history,
            "risk": lifecycle.risk,
        },
        "retrain": retrain,
    }
    return StreamdetConfig.model_validate(
        {
            "topics": [topic],
            "alerts": {"cooldown_s": cooldown_s, "file": None, "stdout": False},
            "models": {"store": str(store), "keep_versions": 2},
        }
    )


@dataclass
class Replayed:
    """One file after its replay: per row, the raw score, severity, alert, serving model."""

    raw: np.ndarray
    severity: np.ndarray
    alerts: np.ndarray
    versions: list[str]
    trainings: dict[str, int]


def replay_file(
    nab_file: NABFile,
    detector: str,
    params: dict[str, Any],
    lifecycle: Lifecycle,
) -> Replayed:
    """Replay one file through the daemon and collect every scored window."""
    from streamdet.app import Application

    n = len(nab_file.values)
    recorder = ScoreRecorder()
    with tempfile.TemporaryDirectory(prefix="streamdet-nab-") as store:
        config = file_config(nab_file, detector, params, lifecycle, Path(store))
        records = (
            (nab_file.key, {"timestamp": ts, "value": float(v)})
            for ts, v in zip(nab_file.timestamps, nab_file.values, strict=True)
        )
        app = Application(
            config,
            source=ReplaySource("nab", records),
            alert_sink=JsonLinesAlertSink(None, echo=False),
            dead_letters=JsonLinesDeadLetterSink(None),
            progress=lambda _message: None,
            serve_metrics=False,
            scores=recorder,
            synchronous=True,
        )
        app.run(install_signal_handlers=False)
        trainings = dict(app.topics["nab"].model.outcomes)
    raw = np.zeros(n)
    severity = np.zeros(n)
    alerts = np.zeros(n, dtype=bool)
    versions = [""] * n
    for scored in recorder.windows:
        row = scored.end_offset
        raw[row], severity[row], alerts[row] = scored.score, scored.severity, scored.alert
        versions[row] = scored.model_version or ""
    first = min((s.end_offset for s in recorder.windows), default=n)
    # Before the first full window nothing is scored: repeat the first values so that no
    # artificial zero stands out.
    raw[:first], severity[:first] = raw[first % n], severity[first % n]
    return Replayed(raw, np.nan_to_num(severity, posinf=1e6), alerts, versions, trainings)


def _category_table(
    files: list[FileScores], profile: CostProfile, threshold: float
) -> dict[str, dict[str, Any]]:
    """Per category, at the corpus threshold: normalised score (where it has windows),
    detected windows, FP rows."""
    table: dict[str, dict[str, Any]] = {}
    for f in files:
        row = table.setdefault(f.name.split("/")[0], {"raw": 0.0, "windows": 0, "tp": 0, "fp": 0})
        counts = f.counts(profile, threshold)
        row["raw"] += counts["score"]
        row["windows"] += len(f.scored_windows())
        row["tp"] += counts["tp"]
        row["fp"] += counts["fp"]
    for row in table.values():
        null, perfect = -profile.fn * row["windows"], profile.tp * row["windows"]
        row["score"] = 100.0 * (row["raw"] - null) / (perfect - null) if perfect != null else None
    return table


def _profiles(files: list[FileScores], profiles: list[CostProfile]) -> dict[str, Any]:
    results = {}
    for profile in profiles:
        result = normalised_score(files, profile)
        result["categories"] = _category_table(files, profile, result["threshold"])
        results[profile.name] = result
    return results


def run(
    data: str | Path,
    out: str | Path,
    *,
    detector: str = "seq2seq",
    params: dict[str, Any] | None = None,
    lifecycle: Lifecycle | None = None,
    ablation: bool = False,
    seed: int = 0,
    windows_file: str = "combined_windows.json",
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """Replay every file of the corpus at ``data``; write CSVs, JSON and plots into ``out``.

    With ``ablation`` every file is replayed a second time with the warm-up model frozen
    (no retraining), and both figures are reported.
    """
    lifecycle = lifecycle or Lifecycle()
    corpus = load_corpus(data, windows_file)
    profiles = load_profiles(Path(data) / "config" / "profiles.json")
    out_dir = Path(out)
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    settings = {**DEFAULT_PARAMS.get(detector, {}), **(params or {}), "seed": seed}
    variants = {"continual" if lifecycle.continual else "frozen": lifecycle}
    if ablation:
        other = replace(lifecycle, retrain_every=None) if lifecycle.continual else Lifecycle()
        variants["frozen" if lifecycle.continual else "continual"] = other
    started = time.perf_counter()
    reports: dict[str, Any] = {}
    for variant, chosen in variants.items():
        protocol_files: list[FileScores] = []
        alert_files: list[FileScores] = []
        trainings = {"promoted": 0, "rejected": 0, "failed": 0}
        for n, nab_file in enumerate(corpus, 1):
            t0 = time.perf_counter()
            replayed = replay_file(nab_file, detector, settings, chosen)
            anomaly = RisingEdge(chosen.edge_window).transform(replayed.severity)
            protocol_files.append(
                FileScores(nab_file.key, anomaly, nab_file.windows, nab_file.probation)
            )
            alert_files.append(
                FileScores(
                    nab_file.key,
                    replayed.alerts.astype(float),
                    nab_file.windows,
                    nab_file.probation,
                )
            )
            for outcome, count in replayed.trainings.items():
                trainings[outcome] = trainings.get(outcome, 0) + count
            if variant == next(iter(variants)):
                _write_csv(out_dir / "results", nab_file, anomaly, replayed)
            promoted = len({v for v in replayed.versions if v})
            progress(
                f"nab {variant} [{n}/{len(corpus)}] {nab_file.key}: {len(nab_file.values)} "
                f"rows, {len(nab_file.windows)} window(s), {promoted} model version(s) served, "
                f"{int(replayed.alerts.sum())} alert(s) ({time.perf_counter() - t0:.1f}s)"
            )
        protocol = _profiles(protocol_files, profiles)
        alerts = _profiles(alert_files, profiles)
        reports[variant] = {
            "lifecycle": asdict(chosen),
            "profiles": protocol,
            "daemon_alerts": {
                name: {k: r[k] for k in ("score", "tp_windows", "fn_windows", "fp_rows")}
                for name, r in alerts.items()
            },
            "retrainings": trainings,
        }
        if variant == next(iter(variants)):
            standard = protocol.get("standard")
            if standard is not None:
                for nab_file, scores, alerted in zip(
                    corpus, protocol_files, alert_files, strict=True
                ):
                    _plot_file(out_dir / "plots", nab_file, scores, alerted, standard["threshold"])
    headline = reports[next(iter(variants))]
    summary = {
        "benchmark": "nab",
        "corpus": str(Path(data).resolve()),
        "files": len(corpus),
        "windows": sum(len(f.windows) for f in corpus),
        "detector": {"name": detector, "params": settings, "seed": seed},
        "path": "each file replayed through streamdet.app.Application (ReplaySource, "
        "synchronous model lifecycle)",
        "nab_score": "policy severity, RisingEdge over the cooldown, one threshold per profile",
        "profiles": headline["profiles"],
        "daemon_alerts": headline["daemon_alerts"],
        "variants": reports,
        "published_standard": PUBLISHED_STANDARD,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "nab.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    progress(f"nab: wrote {out_dir / 'nab.json'}, per-file CSVs and plots")
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_csv(folder: Path, nab_file: NABFile, anomaly: np.ndarray, replayed: Replayed) -> None:
    """NAB's result columns, then what the daemon made of each row."""
    labels = nab_file.labels()
    path = folder / nab_file.key.replace("/", "__")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "timestamp",
                "value",
                "anomaly_score",
                "label",
                "raw_score",
                "severity",
                "alert",
                "model_version",
            ]
        )
        for i, ts in enumerate(nab_file.timestamps):
            writer.writerow(
                [
                    ts,
                    f"{nab_file.values[i]:.6g}",
                    f"{anomaly[i]:.6f}",
                    int(labels[i]),
                    f"{replayed.raw[i]:.6g}",
                    f"{replayed.severity[i]:.6g}",
                    int(replayed.alerts[i]),
                    replayed.versions[i],
                ]
            )


def _plot_file(
    folder: Path,
    nab_file: NABFile,
    scores: FileScores,
    alerted: FileScores,
    threshold: float,
) -> None:
    alerts = alerted.anomaly_score > 0
    alerts[: nab_file.probation] = False
    plots.score_timeline(
        folder / (nab_file.key.replace("/", "__").removesuffix(".csv") + ".png"),
        f"{nab_file.key}: daemon alerts (red); NAB standard threshold {threshold:.3f} (dashed)",
        nab_file.values,
        scores.anomaly_score,
        labels=nab_file.labels(),
        detections=alerts,
        threshold=threshold,
    )
