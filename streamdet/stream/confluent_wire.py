"""The Confluent wire format's frame: magic byte 0, a 4-byte big-endian schema id, (Protobuf
only) the indexes of the message type within its schema file, then the encoded record.

The frame is read by confluent-kafka's own ``SchemaId`` (one implementation of the format);
what it refuses becomes an ``undecodable_record`` naming what was wrong.

>>> from streamdet.core.records import Message
>>> frame = read_frame(Message("t", 0, 5, None, b"\\x00\\x00\\x00\\x00\\x07\\x02", 0), "AVRO")
>>> frame.schema_id, bytes(frame.payload)
(7, b'\\x02')
>>> read_frame(Message("t", 0, 6, None, b'{"json": 1}', 0), "AVRO")
Traceback (most recent call last):
...
streamdet.stream.decode.InvalidMessage: topic t partition 0 offset 6: undecodable_record: \
not in the Confluent wire format (first byte 0x7b, expected 0x00: a record written without \
a schema registry serializer?)
"""

from __future__ import annotations

import io
import struct
from typing import Literal, NamedTuple

from streamdet.core.records import Message
from streamdet.stream.decode import InvalidMessage

MAGIC_BYTE = 0
HEADER_BYTES = 5


class Frame(NamedTuple):
    schema_id: int
    message_indexes: list[int]  # Protobuf: the path to the message type; Avro: []
    payload: memoryview


def read_frame(message: Message, schema_type: Literal["AVRO", "PROTOBUF"]) -> Frame:
    from confluent_kafka.schema_registry.common.serde import SchemaId
    from confluent_kafka.serialization import SerializationError

    raw = message.value
    if len(raw) < HEADER_BYTES:
        raise InvalidMessage(
            message,
            "undecodable_record",
            f"{len(raw)} bytes; a Confluent wire-format record has a {HEADER_BYTES}-byte "
            "header (magic byte, schema id)",
        )
    if raw[0] != MAGIC_BYTE:
        raise InvalidMessage(
            message,
            "undecodable_record",
            f"not in the Confluent wire format (first byte 0x{raw[0]:02x}, expected 0x00: a "
            "record written without a schema registry serializer?)",
        )
    frame = SchemaId(schema_type)
    try:
        rest = frame.from_bytes(io.BytesIO(raw))
    except (EOFError, struct.error, ValueError, SerializationError) as exc:
        raise InvalidMessage(
            message, "undecodable_record", f"truncated frame header: {exc}"[:300]
        ) from None
    assert frame.id is not None  # magic byte 0 carries an id (1 would carry a GUID)
    return Frame(frame.id, list(frame.message_indexes or []), rest.getbuffer()[rest.tell() :])
