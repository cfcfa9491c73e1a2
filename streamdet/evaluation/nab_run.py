"""``streamdet evaluate nab``: any NAB-layout corpus, each file replayed through the daemon.

Every file is one topic of one series, replayed in order through :class:`Application` with a
:class:`ReplaySource`: the same decoder, windows, model lifecycle (warm-up on the
probationary period, retraining on recent normal history, shadow comparison, promotion) and
threshold policy as live traffic. The replay is synchronous (a training blocks the loop), so
a file gives the same result on any machine; live, the same trainings run in the background
and a promoted model starts serving a few batches later.

Two figures come out of one replay:

- **NAB protocol**: NAB chooses one threshold per profile over the corpus, as for every
  detector on its scoreboard. Here the threshold is the policy's, on its severity scale
  (1 = the configured threshold): for each candidate the daemon's rule is applied exactly
  (severity at or above it, then the cooldown in event time), and the best is kept;
- **daemon alerts**: the alerts the daemon published with its configured threshold and
  cooldown, scored as they are (what an operator would have been paged with).
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.config import RetrainConfig, StreamdetConfig
from streamdet.core.progress import ProgressFn, stderr_progress
from streamdet.detectors import detector_class
from streamdet.evaluation import plots
from streamdet.evaluation.nab import (
    CostProfile,
    FileScores,
    NABFile,
    load_corpus,
    load_profiles,
    score_at,
)
from streamdet.io.sinks.scores import ScoreRecorder
from streamdet.io.sources.replay import ReplaySource
from streamdet.thresholds import RULES, Cooldown, RuleParams, rule_params

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
_SEQ2SEQ = {"seq_len": 32, "latent_dim": 32, "epochs": 25, "batch_size": 32}
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "seq2seq": _SEQ2SEQ,
    "ensemble": {"members": [{"name": "seq2seq", "params": _SEQ2SEQ}, {"name": "pca"}]},
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


# The ``threshold.sensitivity`` an operator with each of NAB's cost profiles would choose.
PROFILE_SENSITIVITY = {
    "standard": "balanced",
    "reward_low_FP_rate": "fewer_false_alarms",
    "reward_low_FN_rate": "catch_everything",
}


# How the benchmark retrains each file's model (``retrain`` of its topic): the file's own
# history, every 4,000 rows, warm-started for 3 epochs.
BENCHMARK_RETRAIN = {
    "every_events": 4000,
    "min_events_between": 4000,
    "history_events": 4000,
    "epochs": 3,
}


@dataclass(frozen=True)
class Lifecycle:
    """How each file's topic is run: its ``threshold`` (a rule and its parameters, the
    defaults of ``config.yaml`` unless given), its ``retrain`` section (None: the warm-up
    model stays frozen) and the cooldown in rows (converted to event time with the file's
    median sampling interval)."""

    threshold: RuleParams = field(default_factory=lambda: rule_params({"policy": "likelihood"}))
    retrain: RetrainConfig | None = field(
        default_factory=lambda: RetrainConfig.model_validate(BENCHMARK_RETRAIN)
    )
    cooldown_rows: int = 400

    @property
    def continual(self) -> bool:
        return self.retrain is not None

    def described(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold.model_dump(),
            "retrain": None if self.retrain is None else self.retrain.model_dump(),
            "cooldown_rows": self.cooldown_rows,
        }


def _context(detector_name: str, params: dict[str, Any]) -> int:
    """Rows before the first scorable one."""
    return detector_class(detector_name).context_length(params, DEFAULT_SEQ_LEN)


def _median_interval_s(nab_file: NABFile) -> float:
    times = np.array(nab_file.timestamps, dtype="datetime64[s]").astype(np.int64)
    steps = np.diff(times)
    return float(np.median(steps)) if len(steps) else 1.0


def cooldown_seconds(nab_file: NABFile, lifecycle: Lifecycle) -> float:
    return lifecycle.cooldown_rows * _median_interval_s(nab_file)


def event_seconds(nab_file: NABFile) -> np.ndarray:
    return np.array(nab_file.timestamps, dtype="datetime64[ms]").astype(np.int64) / 1000.0


def cooldown_detections(
    severity: np.ndarray, times_s: np.ndarray, threshold: float, cooldown_s: float
) -> np.ndarray:
    """Rows where the daemon alerts if its threshold is ``threshold`` on the rule's severity
    scale: the severity reaches it and the daemon's one :class:`Cooldown` admits it.

    >>> cooldown_detections(np.array([0, 2, 2, 0, 2, 2]), np.arange(6.0), 1.0, 3.0).tolist()
    [False, True, False, False, True, False]
    """
    detected = np.zeros(len(severity), dtype=bool)
    cooldown = Cooldown(round(cooldown_s * 1000), max_series=1)
    times_ms = np.round(np.asarray(times_s) * 1000).astype(np.int64)
    for row in np.flatnonzero(severity >= threshold):
        detected[row] = cooldown.admit("series", int(times_ms[row]))
    return detected


def file_config(
    nab_file: NABFile,
    detector: str,
    params: dict[str, Any],
    lifecycle: Lifecycle,
    store: Path,
) -> StreamdetConfig:
    """The daemon config a user would write to watch this file's series."""
    cooldown_s = cooldown_seconds(nab_file, lifecycle)
    topic = {
        "name": "nab",
        "format": {"series_key": None, "timestamp_field": "timestamp", "value_fields": ["value"]},
        "window": {"seq_len": _context(detector, params)},
        "detector": {"name": detector, "params": params, "warmup_events": nab_file.probation},
        "threshold": lifecycle.threshold.model_dump(),
        "retrain": {} if lifecycle.retrain is None else lifecycle.retrain.model_dump(),
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
    # Ensembles: per stored version, each member's learnt weight (the trust it was given).
    member_weights: dict[str, list[float]] = field(default_factory=dict)


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
            alert_sinks=[],
            dead_letter_sinks=[],
            progress=lambda _message: None,
            serve_metrics=False,
            scores=recorder,
            synchronous=True,
        )
        app.run(install_signal_handlers=False)
        trainings = dict(app.pipelines["nab"].lifecycle.outcomes)
        member_weights = member_weights_of(Path(store) / "nab" / "versions")
    raw = np.zeros(n)
    severity = np.zeros(n)
    alerts = np.zeros(n, dtype=bool)
    versions = [""] * n
    for scored in recorder.windows:
        row = scored.window.end_offset
        raw[row], severity[row] = scored.score, scored.decision.severity
        alerts[row] = scored.decision.alert
        versions[row] = scored.store_version or ""
    first = min((s.window.end_offset for s in recorder.windows), default=n)
    raw[:first] = raw[first % n]  # no window ends there: nothing scored, nothing flagged
    return Replayed(
        raw, np.nan_to_num(severity, posinf=1e6), alerts, versions, trainings, member_weights
    )


def member_weights_of(versions: Path) -> dict[str, list[float]]:
    """Each stored version's ensemble member weights, from its ``metadata.json``."""
    found: dict[str, list[float]] = {}
    for metadata in sorted(versions.glob("*/metadata.json")):
        members = json.loads(metadata.read_text()).get("training", {}).get("members") or []
        if members and all("weight" in m for m in members):
            found[metadata.parent.name] = [float(m["weight"]) for m in members]
    return found


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


def protocol_scores(
    corpus: list[NABFile],
    replays: list[Replayed],
    lifecycle: Lifecycle,
    profiles: list[CostProfile],
) -> dict[str, Any]:
    """Per profile, the corpus-wide severity threshold whose alerts (after the cooldown)
    score best, its normalised score and per-category table.

    Candidates: 1 (the configured threshold) and quantiles of the severities of every
    scored row, densest in the upper tail.
    """
    files = [FileScores(f.key, np.zeros(len(f.values)), f.windows, f.probation) for f in corpus]
    times = [event_seconds(f) for f in corpus]
    cooldowns = [cooldown_seconds(f, lifecycle) for f in corpus]
    scored = np.concatenate(
        [r.severity[f.probation :] for f, r in zip(corpus, replays, strict=True)]
    )
    levels = 1.0 - np.logspace(-6, 0, 300, endpoint=False)
    candidates = np.unique(np.r_[1.0, np.quantile(scored, levels)])
    results: dict[str, Any] = {}
    for profile in profiles:
        best: tuple[float, float] | None = None
        for theta in candidates:
            total = 0.0
            for f, r, t, c in zip(files, replays, times, cooldowns, strict=True):
                f.anomaly_score = cooldown_detections(r.severity, t, theta, c).astype(float)
                total += f.raw_score(profile, 0.5)
            if best is None or total > best[1]:
                best = (float(theta), total)
        assert best is not None
        for f, r, t, c in zip(files, replays, times, cooldowns, strict=True):
            f.anomaly_score = cooldown_detections(r.severity, t, best[0], c).astype(float)
        result = score_at(files, profile, 0.5)
        result["threshold"] = best[0]
        result["categories"] = _category_table(files, profile, 0.5)
        results[profile.name] = result
    return results


def _sensitivity_alerts(
    corpus: list[NABFile],
    replays: list[Replayed],
    lifecycle: Lifecycle,
    profiles: list[CostProfile],
) -> dict[str, Any]:
    """Per profile, the alerts of the topic with the profile's ``threshold.sensitivity``
    instead of its configured knob, where the rule's severity scale answers that from this
    replay (``ThresholdRule.severity_at``; the replay's retrainings left out the windows
    flagged at the configured setting, as in the protocol's sweep)."""
    configured = lifecycle.threshold
    params_class = type(configured)
    rule = RULES[configured.policy]
    without_knobs = {
        k: v for k, v in configured.model_dump().items() if k not in params_class.sensitivity_knobs
    }
    results: dict[str, Any] = {}
    for profile in profiles:
        level = PROFILE_SENSITIVITY.get(profile.name)
        if level is None:
            continue
        theta = rule.severity_at(configured, rule_params({**without_knobs, "sensitivity": level}))
        if theta is None:
            continue
        files = [
            FileScores(
                f.key,
                cooldown_detections(
                    r.severity, event_seconds(f), theta, cooldown_seconds(f, lifecycle)
                ).astype(float),
                f.windows,
                f.probation,
            )
            for f, r in zip(corpus, replays, strict=True)
        ]
        scored = score_at(files, profile, 0.5)
        results[profile.name] = {
            "sensitivity": level,
            "severity_threshold": theta,
            **{k: scored[k] for k in ("score", "tp_windows", "fn_windows", "fp_rows")},
        }
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
    """Replay every file of the corpus at ``data``; write ``nab.json`` into ``out`` and each
    file's CSV and plot into ``out/<continual|frozen>/results|plots``.

    With ``ablation`` every file is replayed a second time with the warm-up model frozen
    (no retraining), and both figures are reported.
    """
    lifecycle = lifecycle or Lifecycle()
    corpus = load_corpus(data, windows_file)
    profiles = load_profiles(Path(data) / "config" / "profiles.json")
    out_dir = Path(out)
    settings = {**DEFAULT_PARAMS.get(detector, {}), **(params or {}), "seed": seed}
    variants = {"continual" if lifecycle.continual else "frozen": lifecycle}
    if ablation:
        other = (
            replace(lifecycle, retrain=None)
            if lifecycle.continual
            else replace(lifecycle, retrain=Lifecycle().retrain)
        )
        variants["frozen" if lifecycle.continual else "continual"] = other
    started = time.perf_counter()
    reports: dict[str, Any] = {}
    for variant, chosen in variants.items():
        replays: list[Replayed] = []
        trainings = {"promoted": 0, "rejected": 0, "failed": 0}
        for n, nab_file in enumerate(corpus, 1):
            t0 = time.perf_counter()
            replayed = replay_file(nab_file, detector, settings, chosen)
            replays.append(replayed)
            for outcome, count in replayed.trainings.items():
                trainings[outcome] = trainings.get(outcome, 0) + count
            promoted = len({v for v in replayed.versions if v})
            progress(
                f"nab {variant} [{n}/{len(corpus)}] {nab_file.key}: {len(nab_file.values)} "
                f"rows, {len(nab_file.windows)} window(s), {promoted} model version(s) served, "
                f"{int(replayed.alerts.sum())} alert(s) ({time.perf_counter() - t0:.1f}s)"
            )
        protocol = protocol_scores(corpus, replays, chosen, profiles)
        alert_files = [
            FileScores(f.key, r.alerts.astype(float), f.windows, f.probation)
            for f, r in zip(corpus, replays, strict=True)
        ]
        alerts = {p.name: score_at(alert_files, p, 0.5) for p in profiles}
        reports[variant] = {
            "lifecycle": chosen.described(),
            "profiles": protocol,
            "daemon_alerts": {
                name: {k: r[k] for k in ("score", "tp_windows", "fn_windows", "fp_rows")}
                for name, r in alerts.items()
            },
            "sensitivity_alerts": _sensitivity_alerts(corpus, replays, chosen, profiles),
            "retrainings": trainings,
        }
        weights = {f.key: r.member_weights for f, r in zip(corpus, replays, strict=True)}
        if any(weights.values()):
            reports[variant]["member_weights"] = weights
        theta = protocol["standard"]["threshold"] if "standard" in protocol else 1.0
        for folder in ("results", "plots"):
            (out_dir / variant / folder).mkdir(parents=True, exist_ok=True)
        for nab_file, replayed in zip(corpus, replays, strict=True):
            _write_csv(out_dir / variant / "results", nab_file, replayed)
            _plot_file(out_dir / variant / "plots", nab_file, replayed, theta)
    headline = reports[next(iter(variants))]
    summary = {
        "benchmark": "nab",
        "corpus": str(Path(data).resolve()),
        "files": len(corpus),
        "windows": sum(len(f.windows) for f in corpus),
        "detector": {"name": detector, "params": settings, "seed": seed},
        "path": "each file replayed through streamdet.app.Application (ReplaySource, "
        "synchronous model lifecycle)",
        "nab_score": "the daemon's rule (severity >= threshold, then the cooldown) at the "
        "corpus-wide threshold that maximises each profile's score",
        "profiles": headline["profiles"],
        "daemon_alerts": headline["daemon_alerts"],
        "variants": reports,
        "published_standard": PUBLISHED_STANDARD,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "nab.json").write_text(json.dumps(summary, indent=2))
    progress(
        f"nab: wrote {out_dir / 'nab.json'}, per-file CSVs and plots in "
        + ", ".join(str(out_dir / v) for v in variants)
    )
    return summary


def _write_csv(folder: Path, nab_file: NABFile, replayed: Replayed) -> None:
    """NAB's result columns (the anomaly score is the policy's severity), then what the
    daemon made of each row."""
    labels = nab_file.labels()
    path = folder / nab_file.key.replace("/", "__")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["timestamp", "value", "anomaly_score", "label", "raw_score", "alert", "model_version"]
        )
        for i, ts in enumerate(nab_file.timestamps):
            writer.writerow(
                [
                    ts,
                    f"{nab_file.values[i]:.6g}",
                    f"{replayed.severity[i]:.6g}",
                    int(labels[i]),
                    f"{replayed.raw[i]:.6g}",
                    int(replayed.alerts[i]),
                    replayed.versions[i],
                ]
            )


def _plot_file(folder: Path, nab_file: NABFile, replayed: Replayed, threshold: float) -> None:
    alerts = replayed.alerts.copy()
    alerts[: nab_file.probation] = False
    plots.score_timeline(
        folder / (nab_file.key.replace("/", "__").removesuffix(".csv") + ".png"),
        f"{nab_file.key}: daemon alerts (red); severity, NAB standard threshold "
        f"{threshold:.3g} (dashed)",
        nab_file.values,
        np.minimum(replayed.severity, 10.0),
        labels=nab_file.labels(),
        detections=alerts,
        threshold=threshold,
    )
