"""A topic's versioned model store: immutable version directories and a ``CURRENT`` pointer.

Layout of one topic's directory::

    <topic>/versions/v000001/   a detector's .keras files + metadata.json (never changed)
    <topic>/versions/v000002/
    <topic>/CURRENT             the serving version's name, replaced atomically
    <topic>/history.jsonl       every change of CURRENT (what ``rollback`` reads)

A version is written into a temporary directory and renamed into ``versions/`` whole, and
``CURRENT`` is written to a temporary file and renamed over the old one, so a reader (a
daemon, another replica) sees either the old model or the new one, never half of one.
Writers (``streamdet train``, a daemon's training, ``models promote``) take an exclusive
lock on ``<topic>/.lock``, so replicas sharing the store never interleave. A directory
written before versions existed (``metadata.json`` at the top) is read as version
``legacy`` until a version is published.

Pure logic: no Kafka, no Prometheus.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamdet.core.errors import ModelLoadError, StreamdetError
from streamdet.serving.bundle import bundle_summary

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.jsonl"
VERSIONS_DIR = "versions"
LEGACY = "legacy"
TEMPORARY_PREFIX = ".tmp-"
# Changes of CURRENT kept in history.jsonl (what ``rollback`` reads).
HISTORY_KEPT = 1000
_VERSION = re.compile(r"^v(\d{6,})$")


@dataclass(frozen=True)
class VersionInfo:
    """One stored version, as ``streamdet models list`` shows it."""

    version: str
    path: Path
    current: bool
    detector: str | None
    model_version: str | None
    trained_at: str | None
    training_events: int | None
    problem: str | None  # why this version cannot be loaded, if it cannot


class ModelStore:
    """The versions of one topic's model under ``root``; keeps the newest ``keep``.

    >>> import tempfile
    >>> store = ModelStore(Path(tempfile.mkdtemp()) / "sensors", keep=2)
    >>> store.current() is None
    True
    >>> with store.writing() as (version, folder):
    ...     _ = (folder / "metadata.json").write_text('{"detector": "seq2seq"}')
    >>> version, store.current(), store.path_of(version).name
    ('v000001', 'v000001', 'v000001')
    """

    def __init__(self, root: str | Path, keep: int = 5) -> None:
        if keep < 2:
            raise StreamdetError("a model store keeps at least 2 versions (for rollback)")
        self.root = Path(root)
        self.keep = keep

    # ---- reading (no lock: every write is an atomic rename) ---------------------------
    def current(self) -> str | None:
        """The serving version's name; ``legacy`` for a pre-version directory; None if empty."""
        pointer = self.root / CURRENT_FILE
        try:
            name = pointer.read_text().strip()
        except FileNotFoundError:
            return LEGACY if (self.root / "metadata.json").exists() else None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{pointer} cannot be read: {exc}") from None
        return name or None

    def path_of(self, version: str) -> Path:
        if version == LEGACY:
            return self.root
        if not _VERSION.match(version):
            raise StreamdetError(f"{version!r} is not a version name (v000001, v000002, ...)")
        return self.root / VERSIONS_DIR / version

    def versions(self) -> list[str]:
        """Stored versions, oldest first (``legacy`` first if there is one)."""
        folder = self.root / VERSIONS_DIR
        found = sorted(
            (int(m.group(1)), p.name)
            for p in (folder.iterdir() if folder.is_dir() else [])
            if (m := _VERSION.match(p.name)) and p.is_dir()
        )
        legacy = [LEGACY] if (self.root / "metadata.json").exists() else []
        return legacy + [name for _, name in found]

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash is skipped, the rest still counts
        return entries

    def describe(self) -> list[VersionInfo]:
        current = self.current()
        described = []
        for version in self.versions():
            meta: dict[str, Any] = {}
            problem = None
            try:
                meta = json.loads((self.path_of(version) / "metadata.json").read_text())
            except (OSError, json.JSONDecodeError) as exc:
                problem = f"metadata.json unreadable: {exc}"
            training = meta.get("training") or {}
            events = bundle_summary(self.path_of(version)).get("training_events")
            described.append(
                VersionInfo(
                    version=version,
                    path=self.path_of(version),
                    current=version == current,
                    detector=meta.get("detector"),
                    model_version=training.get("model_version"),
                    trained_at=training.get("trained_at"),
                    training_events=events,
                    problem=problem,
                )
            )
        return described

    # ---- writing (under the store's lock) ---------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def writing(self, promote: bool = True) -> Iterator[tuple[str, Path]]:
        """Reserve the next version; the caller writes the model into the folder given.

        On leaving the block the folder is renamed into ``versions/`` and, if ``promote``,
        becomes ``CURRENT``; on an exception it is deleted and nothing changes.
        """
        with self._locked():
            self._remove_abandoned()
            numbers = [int(v[1:]) for v in self.versions() if v != LEGACY]
            version = f"v{(max(numbers) + 1 if numbers else 1):06d}"
            folder = (
                self.root / VERSIONS_DIR / f"{TEMPORARY_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            )
            folder.mkdir(parents=True)
            try:
                yield version, folder
                if not (folder / "metadata.json").exists():
                    raise StreamdetError(f"version {version} was written without metadata.json")
                _sync_tree(folder)
                os.replace(folder, self.path_of(version))
                _sync_directory(folder.parent)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            if promote:
                self._point_to(version, "published")
            self._prune()

    def _remove_abandoned(self) -> None:
        """Temporary versions left by a writer that died (kill -9, power loss) mid-write.
        Only a writer holding the lock creates them, so under the lock none is in use."""
        folder = self.root / VERSIONS_DIR
        for leftover in folder.glob(f"{TEMPORARY_PREFIX}*") if folder.is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True)

    def promote(self, version: str, reason: str = "promoted") -> None:
        """Make ``version`` the serving one (it must exist and have readable metadata)."""
        with self._locked():
            self._check_loadable(version)
            self._point_to(version, reason)

    def rollback(self) -> str:
        """Serve again the version that served before the current one; return its name."""
        with self._locked():
            current = self.current()
            available = set(self.versions())
            for entry in reversed(self.history()):
                previous = entry.get("previous")
                if previous and previous != current and previous in available:
                    self._point_to(previous, "rollback")
                    return previous
            raise StreamdetError(
                f"{self.root}: no earlier version to roll back to (current: {current})"
            )

    def _check_loadable(self, version: str) -> None:
        path = self.path_of(version)
        if version not in self.versions():
            raise StreamdetError(
                f"{self.root}: no version {version!r}; stored: {', '.join(self.versions())}"
            )
        try:
            json.loads((path / "metadata.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path}: metadata.json unreadable: {exc}") from None

    def _point_to(self, version: str, reason: str) -> None:
        previous = self.current()
        pointer = self.root / CURRENT_FILE
        temporary = self.root / f".{CURRENT_FILE}.{uuid.uuid4().hex[:8]}"
        with temporary.open("w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, pointer)
        _sync_directory(self.root)
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": version,
            "previous": previous,
            "reason": reason,
        }
        with (self.root / HISTORY_FILE).open("a") as history:
            history.write(json.dumps(entry) + "\n")
        self._trim_history()

    def _trim_history(self) -> None:
        """Keep the newest ``HISTORY_KEPT`` changes of CURRENT (rollback reads only the
        recent ones); rewritten beside and renamed, once the file holds twice that."""
        path = self.root / HISTORY_FILE
        lines = path.read_text().splitlines()
        if len(lines) <= 2 * HISTORY_KEPT:
            return
        temporary = self.root / f".{HISTORY_FILE}.{uuid.uuid4().hex[:8]}"
        temporary.write_text("\n".join(lines[-HISTORY_KEPT:]) + "\n")
        os.replace(temporary, path)

    def _prune(self) -> None:
        """Delete the oldest versions beyond ``keep``, never the current one or the one a
        rollback would return to."""
        current = self.current()
        protected = {current}
        for entry in reversed(self.history()):
            if entry.get("version") == current and entry.get("previous"):
                protected.add(entry["previous"])
                break
        numbered = [v for v in self.versions() if v != LEGACY]
        for version in numbered[: max(len(numbered) - self.keep, 0)]:
            if version not in protected:
                shutil.rmtree(self.path_of(version), ignore_errors=True)


def _sync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a crash right after it cannot undo it)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_tree(folder: Path) -> None:
    """Flush every file of a version to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _sync_directory(folder)
