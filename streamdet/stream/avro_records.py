"""Avro records in the Confluent wire format, read with fastavro.

Each record is read with the schema its id names in the registry (the writer's schema), and
with ``reader_schema: latest`` resolved to the subject's newest version, so that the field
names the config gives are those of the newest schema while older records still read
(aliases, defaults, promoted types: Avro's schema resolution). A record that is not what its
schema says (cut short, bytes left over, undecodable text), names an unknown id, or cannot
be resolved to the reader's schema goes to the dead-letter topic with the reason.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from streamdet.core.records import Message
from streamdet.io.schema_registry import SchemaRegistry, UnknownSchema
from streamdet.stream.confluent_wire import read_frame
from streamdet.stream.decode import InvalidMessage


class AvroRecords:
    """``read(message) -> dict``: one Avro record as a dict of its fields."""

    def __init__(self, registry: SchemaRegistry, reader_schema: str, subject: str) -> None:
        self.registry = registry
        self.reader_schema = reader_schema
        self.subject = subject

    def __call__(self, message: Message) -> dict[str, Any]:
        frame = read_frame(message, "AVRO")
        writer = self._parsed(message, frame.schema_id)
        reader = None
        if self.reader_schema == "latest":
            try:
                latest_id, _ = self.registry.latest(self.subject)
            except UnknownSchema as exc:
                raise InvalidMessage(message, "unknown_schema", str(exc)) from None
            if latest_id != frame.schema_id:
                reader = self._parsed(message, latest_id)
        payload = io.BytesIO(frame.payload)
        try:
            record = fastavro.schemaless_reader(payload, writer, reader)
        except SchemaResolutionError as exc:
            raise InvalidMessage(
                message,
                "schema_mismatch",
                f"written with schema id {frame.schema_id}, which cannot be read as "
                f"{self.subject}'s latest version: {exc}"[:300],
            ) from None
        except (EOFError, ValueError, UnicodeDecodeError, IndexError, OverflowError) as exc:
            raise InvalidMessage(
                message,
                "undecodable_record",
                f"not an Avro record of schema id {frame.schema_id}: {type(exc).__name__}: {exc}"[
                    :300
                ],
            ) from None
        left = len(frame.payload) - payload.tell()
        if left:
            raise InvalidMessage(
                message,
                "undecodable_record",
                f"{left} byte(s) left after the Avro record of schema id {frame.schema_id}: "
                "not written with that schema",
            )
        if not isinstance(record, dict):
            raise InvalidMessage(
                message,
                "wrong_type",
                f"schema id {frame.schema_id} is not an Avro record (fields are read by name)",
            )
        return record

    def _parsed(self, message: Message, schema_id: int) -> Any:
        key = ("AVRO", schema_id)
        parsed = self.registry.parsed.get(key)
        if parsed is not None:
            return parsed
        try:
            schema = self.registry.schema(schema_id)
        except UnknownSchema as exc:
            raise InvalidMessage(message, "unknown_schema", str(exc)) from None
        if (schema.schema_type or "AVRO") != "AVRO":
            raise InvalidMessage(
                message,
                "schema_mismatch",
                f"schema id {schema_id} is a {schema.schema_type} schema; the topic's "
                "format.encoding is avro",
            )
        named: dict[str, Any] = {}
        try:
            for reference in schema.references or []:
                referenced = self.registry.version(reference.subject, reference.version)
                fastavro.parse_schema(json.loads(referenced.schema_str), named)
            parsed = fastavro.parse_schema(json.loads(schema.schema_str), named)
        except UnknownSchema as exc:
            raise InvalidMessage(message, "unknown_schema", str(exc)) from None
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise InvalidMessage(
                message,
                "unknown_schema",
                f"schema id {schema_id} is not a schema fastavro can read: {exc}"[:300],
            ) from None
        self.registry.parsed[key] = parsed
        return parsed
