"""``streamdet models list | promote VERSION | rollback``: operate a topic's model store.

The daemon watches each topic's ``CURRENT`` pointer (every ``models.reload_interval_s``) and
swaps a new current version in without a restart, so ``promote`` and ``rollback`` take
effect on running daemons within seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamdet.core.errors import ConfigError


def _stores(args: argparse.Namespace) -> list[tuple[Any, Any]]:
    from streamdet.config import load_config
    from streamdet.serving.store import ModelStore

    config = load_config(args.config)
    topics = {t.name: t for t in config.topics}
    if args.topic is not None and args.topic not in topics:
        raise ConfigError(
            f"--topic {args.topic!r} is not in {args.config}; allowed: {', '.join(sorted(topics))}"
        )
    chosen = [topics[args.topic]] if args.topic else list(topics.values())
    return [
        (
            topic,
            ModelStore(
                Path(topic.detector.model_dir or Path(config.models.store) / topic.name),
                keep=config.models.keep_versions,
            ),
        )
        for topic in chosen
    ]


def _list(args: argparse.Namespace) -> None:
    from streamdet.commands.evaluate import table

    rows = []
    described = {}
    for topic, store in _stores(args):
        versions = store.describe()
        described[topic.name] = [{**info.__dict__, "path": str(info.path)} for info in versions]
        for info in versions:
            rows.append(
                [
                    topic.name,
                    ("* " if info.current else "  ") + info.version,
                    info.detector or "?",
                    info.model_version or "?",
                    info.trained_at or "?",
                    "" if info.training_events is None else str(info.training_events),
                    info.problem or "",
                ]
            )
    if args.json:
        print(json.dumps(described, indent=2))
        return
    if not rows:
        print("no stored models")
        return
    print(
        table(
            rows,
            ["topic", "version", "detector", "model", "trained at", "events", "problem"],
        )
    )
    print("* = current (served by running daemons)")


def _promote(args: argparse.Namespace) -> None:
    from streamdet.serving.bundle import ServingBundle

    ((topic, store),) = _stores(args)
    # Load it fully first: a corrupt or incompatible version is refused here, not by the
    # daemons (which would refuse it too, and keep serving the previous one).
    ServingBundle.load(store.path_of(args.version), topic.detector.name)
    store.promote(args.version)
    print(f"topic {topic.name}: current version is now {args.version}")


def _rollback(args: argparse.Namespace) -> None:
    ((topic, store),) = _stores(args)
    version = store.rollback()
    print(f"topic {topic.name}: rolled back; current version is now {version}")


def add_parser(commands: Any) -> None:
    models = commands.add_parser("models", help="list, promote or roll back stored models")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every stored version of every topic")
    listing.add_argument("--config", default="config.yaml")
    listing.add_argument("--topic", help="only this topic")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)
    promote = actions.add_parser("promote", help="serve VERSION (running daemons swap it in)")
    promote.add_argument("version", help="a version from `models list`, e.g. v000003")
    promote.add_argument("--config", default="config.yaml")
    promote.add_argument("--topic", required=True)
    promote.set_defaults(func=_promote)
    rollback = actions.add_parser("rollback", help="serve the version served before")
    rollback.add_argument("--config", default="config.yaml")
    rollback.add_argument("--topic", required=True)
    rollback.set_defaults(func=_rollback)
