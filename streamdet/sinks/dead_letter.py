"""Dead letters in embedded mode: a log line, and JSON lines in a file when configured."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Protocol

from streamdet.sources.base import Message


class DeadLetterSink(Protocol):
    def send(self, message: Message, reason: str, detail: str) -> None: ...

    def confirm(self) -> None:
        """Block until every dead letter sent so far is stored; raise if one was not."""


class JsonLinesDeadLetterSink:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None

    def send(self, message: Message, reason: str, detail: str) -> None:
        if self.path is None:
            return
        record = {
            "reason": reason,
            "error": detail,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "value_base64": base64.b64encode(message.value).decode(),
        }
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def confirm(self) -> None:
        """Writes are synchronous."""
