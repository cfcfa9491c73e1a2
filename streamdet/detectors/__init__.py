"""Detectors: one module each, all behind :class:`~streamdet.detectors.base.Detector`.

Each module registers its class with ``@register``; importing this package imports them all,
so :data:`DETECTORS` (the registry) is complete. ``OutlierSeq2Seq``, ``OutlierVAEGMM`` and
``AdversarialVAE`` are the same classes under alibi-detect's names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamdet.detectors.adversarial_vae import AdversarialVAE, AdversarialVAEDetector
from streamdet.detectors.base import (
    REGISTRY,
    Detector,
    KerasDetector,
    Scores,
    detectors_for,
    read_metadata,
    register,
)
from streamdet.detectors.image_vae import ImageVAEDetector
from streamdet.detectors.seq2seq import OutlierSeq2Seq, Seq2SeqDetector
from streamdet.detectors.vae_lstm import VAELSTMDetector
from streamdet.detectors.vaegmm import OutlierVAEGMM, VAEGMMDetector
from streamdet.errors import ConfigError, ModelLoadError

DETECTORS: dict[str, type[KerasDetector]] = REGISTRY


def create_detector(name: str, **params: Any) -> KerasDetector:
    """A new, unfitted detector by registry name."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r}; allowed: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**params)


def load_detector(
    directory: str | Path,
    expected_name: str | None = None,
    expected_input_shape: tuple[int, ...] | None = None,
) -> KerasDetector:
    """Load whichever detector ``directory`` holds, optionally insisting on its kind/shape."""
    meta = read_metadata(directory)
    name = meta["detector"]
    if expected_name is not None and name != expected_name:
        raise ModelLoadError(f"{directory} holds a '{name}' model, not a '{expected_name}' model")
    if name not in DETECTORS:
        raise ModelLoadError(f"{directory} holds an unknown detector {name!r}")
    return DETECTORS[name].load(directory, expected_input_shape=expected_input_shape)


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
    "detectors_for",
    "load_detector",
    "register",
]
