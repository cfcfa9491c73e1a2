"""Dead letters: a message that cannot be scored, with its reason; and the embedded sink
(JSON lines in a file when configured)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamdet.core.records import Message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """``message`` could not be scored: ``reason`` (one of the decoder's reasons) and what
    exactly was wrong (``detail``)."""

    message: Message
    reason: str
    detail: str


class JsonLinesDeadLetterSink:
    name = "dead-letters-file"
    transactional = False

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None

    def deliver(self, letters: Sequence[DeadLetter]) -> list[Exception | None]:
        if self.path is None or not letters:
            return [None] * len(letters)
        lines = "".join(
            json.dumps(
                {
                    "reason": letter.reason,
                    "error": letter.detail,
                    "topic": letter.message.topic,
                    "partition": letter.message.partition,
                    "offset": letter.message.offset,
                    "value_base64": base64.b64encode(letter.message.value).decode(),
                }
            )
            + "\n"
            for letter in letters
        )
        try:
            with self.path.open("a") as handle:
                handle.write(lines)
        except OSError as exc:
            return [exc] * len(letters)
        return [None] * len(letters)
