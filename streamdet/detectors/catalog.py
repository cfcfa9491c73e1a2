"""The detectors' names and kinds, read without importing them (TensorFlow is slow to load).

Every module of this package that defines a class decorated with ``@register`` declares its
``name`` and ``kinds`` as literals; this catalog reads them from the source with :mod:`ast`,
so ``check-config``, ``schema``, ``models list`` and ``--help`` answer in well under a second,
and a new detector is still one module (Merlion maps names to import paths for the same
reason). The contract tests check the catalog against the real registry.

>>> "seq2seq" in detector_names() and "seq2seq" in detectors_for("timeseries")
True
>>> entry("vaegmm").module
'streamdet.detectors.vaegmm'
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = "streamdet.detectors"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kinds: tuple[str, ...]
    module: str
    class_name: str


def _literal_attributes(node: ast.ClassDef) -> dict[str, object]:
    values: dict[str, object] = {}
    for statement in node.body:
        target: ast.expr | None = None
        if isinstance(statement, ast.AnnAssign):
            target = statement.target
        elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        if not isinstance(target, ast.Name) or statement.value is None:  # type: ignore[union-attr]
            continue
        try:
            values[target.id] = ast.literal_eval(statement.value)  # type: ignore[union-attr]
        except ValueError:
            continue
    return values


def _registered(node: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list)


@cache
def catalog() -> dict[str, CatalogEntry]:
    """Every registered detector, by name, found in this package's source files."""
    entries: dict[str, CatalogEntry] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef) or not _registered(node):
                continue
            attributes = _literal_attributes(node)
            name, kinds = attributes.get("name"), attributes.get("kinds")
            if not isinstance(name, str) or not isinstance(kinds, tuple):
                raise RuntimeError(
                    f"{path.name}: {node.name} is registered but does not declare `name` and "
                    "`kinds` as literals in its class body (the catalog reads them there)"
                )
            entries[name] = CatalogEntry(name, kinds, f"{PACKAGE}.{path.stem}", node.name)
    return entries


def entry(name: str) -> CatalogEntry:
    return catalog()[name]


def detector_names() -> tuple[str, ...]:
    """The registered detectors' names, sorted."""
    return tuple(sorted(catalog()))


def detectors_for(kind: str) -> tuple[str, ...]:
    """Registered detector names that score topics of ``kind``, sorted."""
    return tuple(sorted(e.name for e in catalog().values() if kind in e.kinds))
