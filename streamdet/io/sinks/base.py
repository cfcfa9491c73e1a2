"""The one delivery contract every sink follows (alerts, dead letters; Kafka, files).

``deliver(items)`` sends every item and waits until each is stored (acknowledged by the
broker, written to the file); it returns one result per item: ``None`` when stored, the
exception when not. It never raises for a failed item: the outbox keeps what failed, per sink,
and sends only that again after a backoff, so one failing sink never makes the others repeat
what they already stored.

A sink whose ``transactional`` is true (the alert topic under ``alerts.delivery:
exactly_once``) stores items inside the transaction the checkpoint holds open: they count as
stored for the commit that closes it, and are sent again if that transaction is aborted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

Item = TypeVar("Item", contravariant=True)


class Sink(Protocol[Item]):
    name: str
    transactional: bool

    def deliver(self, items: Sequence[Item]) -> list[Exception | None]: ...
