"""TensorFlow, loaded quietly: its C++ start-up lines are silenced unless the user asks.

As it loads, TensorFlow prints INFO and WARNING lines from C++ (oneDNN, CPU features,
absl's "before InitializeLog" notice) straight to file descriptor 2, before any of
streamdet's own output and whatever ``TF_CPP_MIN_LOG_LEVEL`` says for some of them.
:func:`load_tensorflow` imports TensorFlow and Keras with descriptor 2 pointed at
``/dev/null`` and only errors enabled afterwards, unless the user asks for the lines:
``STREAMDET_TF_LOGS=1``, or ``TF_CPP_MIN_LOG_LEVEL`` set to 0 or 1. An import that fails
still raises normally (its traceback is printed after the descriptor is restored).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def load_tensorflow() -> tuple[ModuleType, ModuleType]:
    """``(keras, tensorflow)``, imported once, quietly."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["keras"], sys.modules["tensorflow"]
    wanted = os.environ.get("STREAMDET_TF_LOGS") or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in (
        "0",
        "1",
    )
    if wanted:
        import keras
        import tensorflow

        return keras, tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced():
        import keras
        import tensorflow
    return keras, tensorflow
