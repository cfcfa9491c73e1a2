"""Progress lines for long work (training epochs, evaluation files, downloads).

Everything goes to stderr so that stdout stays free for machine-readable output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressFn = Callable[[str], None]


def stderr_progress(message: str) -> None:
    """Print one progress line to stderr, stamped with the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def silent(message: str) -> None:
    """A progress sink that drops everything (tests, library use)."""
