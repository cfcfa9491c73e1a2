"""Every scored window's decision, for backtests and evaluations (alerts are only the tail).

A score sink sees each scored window once, in the order the daemon judged them: the raw
score, the threshold rule's decision (severity, threshold, flagged, alert) and the model store
version that scored it (column ``model_version``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Protocol, TextIO

from streamdet.core.records import ScoredWindow

COLUMNS = (
    "topic",
    "series",
    "partition",
    "end_offset",
    "end_ts_ms",
    "score",
    "rule",
    "severity",
    "threshold",
    "flagged",
    "alert",
    "model_version",
)


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
        self._writer.writerow(COLUMNS)

    def record(self, scored: ScoredWindow) -> None:
        window, decision = scored.window, scored.decision
        self._writer.writerow(
            [
                window.topic,
                window.series,
                window.partition,
                window.end_offset,
                window.end_ts_ms,
                f"{scored.score:.17g}",
                decision.rule,
                f"{decision.severity:.9g}",
                f"{decision.threshold:.17g}",
                int(decision.flagged),
                int(decision.alert),
                scored.store_version or "",
            ]
        )

    def close(self) -> None:
        self._handle.close()
