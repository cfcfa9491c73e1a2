"""Sources of raw messages: the embedded simulator now, Kafka consumers behind the same shape."""

from streamdet.io.sources.base import Message, Source

__all__ = ["Message", "Source"]
