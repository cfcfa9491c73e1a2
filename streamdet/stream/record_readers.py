"""How each ``format.encoding`` turns a message into a record (a dict of named fields).

JSON needs nothing but the message (:func:`streamdet.stream.decode.decode_timeseries` reads
it itself); Avro and Protobuf read their schemas from the registry. Adding an encoding is one
module with a reader plus one entry here.
"""

from __future__ import annotations

from streamdet.config import TopicConfig
from streamdet.io.schema_registry import SchemaRegistry
from streamdet.stream.decode import RecordReader


def record_reader(topic: TopicConfig, registry: SchemaRegistry | None) -> RecordReader | None:
    """The reader of ``topic``'s records; None for JSON (the decoder's own)."""
    encoding = topic.format.encoding
    if encoding == "json":
        return None
    if registry is None:  # the config's validation makes this unreachable from a file
        raise ValueError(f"topic {topic.name}: format.encoding {encoding} needs a registry")
    if encoding == "avro":
        from streamdet.stream.avro_records import AvroRecords

        subject = topic.format.subject or f"{topic.name}-value"
        return AvroRecords(registry, topic.format.reader_schema, subject)
    from streamdet.stream.protobuf_records import ProtobufRecords

    return ProtobufRecords(registry)
