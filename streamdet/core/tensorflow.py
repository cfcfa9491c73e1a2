"""TensorFlow, loaded quietly: its C++ start-up lines are silenced unless the user asks.

As it loads, TensorFlow prints INFO and WARNING lines from C++ (oneDNN, CPU features,
absl's "before InitializeLog" notice) straight to file descriptor 2, before any of
streamdet's own output and whatever ``TF_CPP_MIN_LOG_LEVEL`` says for some of them.
:func:`load_tensorflow` imports TensorFlow and Keras with descriptor 2 pointed at
``/dev/null`` and only errors enabled afterwards, unless the user asks for the lines:
``STREAMDET_TF_LOGS=1``, or ``TF_CPP_MIN_LOG_LEVEL`` set to 0 or 1. An import that fails
still raises normally (its traceback is printed after the descriptor is restored).

Keras imports scikit-learn and matplotlib as it loads when they are installed (for its
scikit-learn wrappers and image-gallery plots, which streamdet never uses): about 1.8 s of
every process's start. While Keras loads, those imports fail for Keras' own modules only
(:class:`_KerasOptionalImports`); every other module, in any thread, imports them as usual.

TensorFlow comes with one of two extras: ``streamdet[cpu]`` (``tensorflow-cpu``, the
default of every documented install) or ``streamdet[gpu]`` (``tensorflow[and-cuda]``, the
CUDA build and its libraries as wheels). :func:`scoring_device` says which one scores.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

from streamdet.core.errors import StreamdetError

logger = logging.getLogger(__name__)


class TensorFlowMissing(StreamdetError, ModuleNotFoundError):
    """Neither of TensorFlow's builds is installed (streamdet was installed without the
    ``cpu`` or ``gpu`` extra): the CLI prints this and exits 2."""

    def __init__(self, module: str | None) -> None:
        super().__init__(
            "TensorFlow is not installed: install streamdet with one of its builds, "
            "pip install 'streamdet[cpu]' (the CPU build) or pip install 'streamdet[gpu]' "
            "(CUDA, for a machine with an NVIDIA GPU and its driver)"
        )
        self.name = module


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


class _KerasOptionalImports(importlib.abc.MetaPathFinder):
    """Makes ``import sklearn`` / ``import matplotlib`` fail when a Keras module asks
    (Keras then leaves out what needs them), and only then."""

    SKIPPED = frozenset({"sklearn", "matplotlib"})
    MACHINERY = ("importlib", "_frozen_importlib", "_frozen_importlib_external")

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.SKIPPED:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(self.MACHINERY):
            frame = frame.f_back
        importer = "" if frame is None else frame.f_globals.get("__name__", "")
        if importer.partition(".")[0] == "keras":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def _without_keras_optional_imports() -> Iterator[None]:
    finder = _KerasOptionalImports()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def load_tensorflow() -> tuple[ModuleType, ModuleType]:
    """``(keras, tensorflow)``, imported once, quietly."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["keras"], sys.modules["tensorflow"]
    wanted = os.environ.get("STREAMDET_TF_LOGS") or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in (
        "0",
        "1",
    )
    try:
        # TensorFlow first: Keras would otherwise fail deep inside with a less clear name.
        if wanted:
            with _without_keras_optional_imports():
                tensorflow = importlib.import_module("tensorflow")
                return importlib.import_module("keras"), tensorflow
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _stderr_silenced(), _without_keras_optional_imports():
            tensorflow = importlib.import_module("tensorflow")
            keras = importlib.import_module("keras")
    except ModuleNotFoundError as error:
        if error.name is None or error.name.partition(".")[0] != "tensorflow":
            raise
        raise TensorFlowMissing(error.name) from error
    return keras, tensorflow


@dataclass(frozen=True)
class ScoringDevice:
    """Where Keras models score: TensorFlow's first GPU when it sees one, else the CPU."""

    device: str  # TensorFlow's name for it: "GPU:0" or "CPU:0"
    name: str  # the GPU's model, or the CPU's architecture
    build: str  # "cuda" (the gpu extra's TensorFlow) or "cpu"

    def describe(self) -> str:
        return f"{self.device} ({self.name}, TensorFlow {self.build} build)"


_device: ScoringDevice | None = None


def scoring_device() -> ScoringDevice:
    """The device Keras models score on (TensorFlow loaded if it was not); asked once."""
    global _device
    if _device is None:
        _, tf = load_tensorflow()
        build = "cuda" if tf.test.is_built_with_cuda() else "cpu"
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            _device = ScoringDevice("GPU:0", str(details.get("device_name", "GPU")), build)
        else:
            if build == "cuda":
                logger.warning(
                    "TensorFlow's CUDA build sees no GPU (CUDA_VISIBLE_DEVICES=%r; is the "
                    "NVIDIA driver installed and the device mounted?): models score on the CPU",
                    os.environ.get("CUDA_VISIBLE_DEVICES"),
                )
            _device = ScoringDevice("CPU:0", platform.machine() or "cpu", build)
    return _device


_announced = False


def announce_scoring_device(progress: Callable[[str], None]) -> None:
    """Say once per process where models score, as soon as one that needs TensorFlow does."""
    global _announced
    if _announced or "tensorflow" not in sys.modules:
        return
    _announced = True
    progress(f"models score on {scoring_device().describe()}")
