"""Detectors: one module each, all behind :class:`~streamdet.detectors.base.Detector`.

Importing this package is cheap: the detector classes are imported on first use (most of
them load TensorFlow). :func:`registry` imports every module the catalog lists, so
:data:`DETECTORS` is complete; :func:`detectors_for` and :func:`detector_names` answer from
the catalog alone. ``OutlierSeq2Seq``, ``OutlierVAEGMM`` and ``AdversarialVAE`` are the same
classes under alibi-detect's names.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamdet.core.errors import ConfigError, ModelLoadError
from streamdet.detectors.catalog import catalog, detector_names, detectors_for

if TYPE_CHECKING:
    from streamdet.detectors.adversarial_vae import AdversarialVAE, AdversarialVAEDetector
    from streamdet.detectors.base import Detector, Scores, register
    from streamdet.detectors.image_vae import ImageVAEDetector
    from streamdet.detectors.keras_base import KerasDetector
    from streamdet.detectors.seq2seq import OutlierSeq2Seq, Seq2SeqDetector
    from streamdet.detectors.vae_lstm import VAELSTMDetector
    from streamdet.detectors.vaegmm import OutlierVAEGMM, VAEGMMDetector

# Names this package exports, and the module each lives in.
_EXPORTS = {
    "Detector": "base",
    "Scores": "base",
    "register": "base",
    "KerasDetector": "keras_base",
    "AdversarialVAE": "adversarial_vae",
    "AdversarialVAEDetector": "adversarial_vae",
    "ImageVAEDetector": "image_vae",
    "OutlierSeq2Seq": "seq2seq",
    "Seq2SeqDetector": "seq2seq",
    "VAELSTMDetector": "vae_lstm",
    "OutlierVAEGMM": "vaegmm",
    "VAEGMMDetector": "vaegmm",
}


def registry() -> dict[str, type[Detector]]:
    """Every registered detector class by name (imports each detector's module)."""
    from streamdet.detectors.base import REGISTRY

    for item in catalog().values():
        importlib.import_module(item.module)
    return REGISTRY


def detector_class(name: str) -> type[Detector]:
    """The registered class called ``name`` (imports only its module)."""
    from streamdet.detectors.base import REGISTRY

    if name not in catalog():
        raise ConfigError(f"unknown detector {name!r}; allowed: {', '.join(detector_names())}")
    importlib.import_module(catalog()[name].module)
    return REGISTRY[name]


def __getattr__(name: str) -> Any:
    if name == "DETECTORS":
        return registry()
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector by registry name."""
    return detector_class(name)(**params)


def load_detector(
    directory: str | Path,
    expected_name: str | None = None,
    expected_input_shape: tuple[int, ...] | None = None,
) -> Detector:
    """Load whichever detector ``directory`` holds, optionally insisting on its kind/shape."""
    from streamdet.detectors.base import read_metadata

    meta = read_metadata(directory)
    name = meta["detector"]
    if expected_name is not None and name != expected_name:
        raise ModelLoadError(f"{directory} holds a '{name}' model, not a '{expected_name}' model")
    if name not in catalog():
        raise ModelLoadError(f"{directory} holds an unknown detector {name!r}")
    return detector_class(name).load(directory, expected_input_shape=expected_input_shape)


def save_detector(detector: Detector, directory: str | Path) -> Path:
    """Save a fitted detector into ``directory`` (alibi-detect's ``save_detector``): its
    files and ``metadata.json``, written beside and renamed into place whole."""
    return detector.save(directory)


__all__ = [
    "DETECTORS",
    "AdversarialVAE",
    "AdversarialVAEDetector",
    "Detector",
    "ImageVAEDetector",
    "KerasDetector",
    "OutlierSeq2Seq",
    "OutlierVAEGMM",
    "Scores",
    "Seq2SeqDetector",
    "VAEGMMDetector",
    "VAELSTMDetector",
    "create_detector",
    "detector_class",
    "detector_names",
    "detectors_for",
    "load_detector",
    "register",
    "registry",
    "save_detector",
]
