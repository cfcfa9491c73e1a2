"""One root exception for everything streamdet raises on purpose, with small subclasses.

Callers that only want to know "did streamdet refuse this?" catch :class:`StreamdetError`;
the subclasses say what kind of thing was wrong so the message can stay plain.
"""

from __future__ import annotations


class StreamdetError(Exception):
    """Root of every error streamdet raises deliberately."""


class ConfigError(StreamdetError, ValueError):
    """The configuration is invalid; the message names the YAML path and what is allowed."""


class InvalidInputError(StreamdetError, ValueError):
    """Data given to a detector or a window has the wrong shape, type or values."""


class NotFittedError(StreamdetError, RuntimeError):
    """A detector was asked to score or save before it was fitted."""


class ModelLoadError(StreamdetError):
    """A saved model directory is missing, corrupt, or was written for something else."""


class DataNotFoundError(StreamdetError, FileNotFoundError):
    """A benchmark data set is not where it was looked for."""
