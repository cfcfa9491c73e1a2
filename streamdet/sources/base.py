"""What every source hands the pipeline: raw messages with their position in the stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One raw message, as Kafka would deliver it (the simulator mimics this shape)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


class Source(Protocol):
    """A polled stream of messages whose progress is committed after alerts are safe."""

    def poll(self, timeout_ms: int) -> list[Message]: ...

    def commit(self, offsets: dict[tuple[str, int], int]) -> None: ...

    def close(self) -> None: ...
