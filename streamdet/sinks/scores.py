"""Every scored window's verdict, for backtests and evaluations (alerts are only the tail).

A score sink sees each scored window once, in the order the daemon judged them: the raw
score, the policy's severity (1 = its threshold), whether an alert was raised, and the model
version that scored it.

>>> recorder = ScoreRecorder()
>>> recorder.record(ScoredWindow("t", "a", 0, 7, 1_000, 0.5, 0.2, False, "v000001"))
>>> recorder.windows[0].severity
0.2
"""

from __future__ import annotations

import csv
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Protocol, TextIO


@dataclass(frozen=True, slots=True)
class ScoredWindow:
    topic: str
    series: str
    partition: int
    end_offset: int
    end_ts_ms: int
    score: float
    severity: float
    alert: bool
    model_version: str | None


class ScoreSink(Protocol):
    def record(self, scored: ScoredWindow) -> None: ...

    def close(self) -> None: ...


class ScoreRecorder:
    """Keeps every scored window in memory (evaluations, tests)."""

    def __init__(self) -> None:
        self.windows: list[ScoredWindow] = []

    def record(self, scored: ScoredWindow) -> None:
        self.windows.append(scored)

    def close(self) -> None:
        """Nothing to release."""


class CsvScoreSink:
    """Writes one CSV row per scored window (``streamdet replay --scores``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = self.path.open("w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow([f.name for f in fields(ScoredWindow)])

    def record(self, scored: ScoredWindow) -> None:
        row = list(astuple(scored))
        row[5], row[6] = f"{scored.score:.9g}", f"{scored.severity:.6g}"
        row[7] = int(scored.alert)
        self._writer.writerow(row)

    def close(self) -> None:
        self._handle.close()
