"""Protobuf records in the Confluent wire format, read without generated code.

A registry holds Protobuf schemas as ``.proto`` text. The text (with the schemas it imports,
which the registry names as references) is compiled by protoc, as grpcio-tools ships it, into
descriptors, once per schema id and in a child process; the record's message indexes pick
the message type; the record is parsed with the protobuf runtime. Its top-level fields become
a dict: scalars as they are, a ``google.protobuf.Timestamp`` as epoch milliseconds, ``bytes``
as bytes (an image field). A field with presence (``optional``, a message, a oneof member)
that the record does not set is left out, so a missing value is refused rather than read as
0; proto3 fields without presence read 0 when absent, as protobuf itself defines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from streamdet.core.records import Message
from streamdet.io.schema_registry import SchemaRegistry, UnknownSchema
from streamdet.stream.confluent_wire import read_frame
from streamdet.stream.decode import InvalidMessage

SCHEMA_FILE = "schema.proto"
TIMESTAMP = "google.protobuf.Timestamp"
PROTOC_TIMEOUT_S = 60


class SchemaDoesNotCompile(Exception):
    pass


class ProtobufRecords:
    """``read(message) -> dict``: one Protobuf record's top-level fields."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._classes: dict[tuple[int, tuple[int, ...]], Any] = {}

    def __call__(self, message: Message) -> dict[str, Any]:
        frame = read_frame(message, "PROTOBUF")
        message_class = self._message_class(message, frame.schema_id, frame.message_indexes)
        try:
            record = message_class.FromString(frame.payload)
        except DecodeError as exc:
            raise InvalidMessage(
                message,
                "undecodable_record",
                f"not a {message_class.DESCRIPTOR.full_name} of schema id {frame.schema_id}: {exc}"[
                    :300
                ],
            ) from None
        return _fields(record)

    def _message_class(self, message: Message, schema_id: int, indexes: list[int]) -> Any:
        key = (schema_id, tuple(indexes))
        found = self._classes.get(key)
        if found is not None:
            return found
        file = self._file(message, schema_id)
        descriptor: Descriptor | FileDescriptor = file
        try:
            for level, index in enumerate(indexes):
                types = (
                    file.message_types_by_name if level == 0 else descriptor.nested_types_by_name  # type: ignore[union-attr]
                )
                descriptor = list(types.values())[index]
        except IndexError:
            raise InvalidMessage(
                message,
                "schema_mismatch",
                f"message indexes {indexes} name no message type of schema id {schema_id}",
            ) from None
        if isinstance(descriptor, FileDescriptor):  # no indexes: the first message type
            if not file.message_types_by_name:
                raise InvalidMessage(
                    message, "schema_mismatch", f"schema id {schema_id} declares no message"
                )
            descriptor = next(iter(file.message_types_by_name.values()))
        message_class = GetMessageClass(descriptor)
        if len(self._classes) >= self.registry.parsed.maxsize:
            self._classes.clear()
        self._classes[key] = message_class
        return message_class

    def _file(self, message: Message, schema_id: int) -> FileDescriptor:
        key = ("PROTOBUF", schema_id)
        file = self.registry.parsed.get(key)
        if file is not None:
            return file
        try:
            schema = self.registry.schema(schema_id)
            if schema.schema_type != "PROTOBUF":
                raise InvalidMessage(
                    message,
                    "schema_mismatch",
                    f"schema id {schema_id} is a {schema.schema_type or 'AVRO'} schema; the "
                    "topic's format.encoding is protobuf",
                )
            sources: dict[str, str] = {}
            self._gather(schema, SCHEMA_FILE, sources)
            file = _compile(sources)
        except UnknownSchema as exc:
            raise InvalidMessage(message, "unknown_schema", str(exc)) from None
        except SchemaDoesNotCompile as exc:
            raise InvalidMessage(
                message, "unknown_schema", f"schema id {schema_id} does not compile: {exc}"
            ) from None
        self.registry.parsed[key] = file
        return file

    def _gather(self, schema: Any, name: str, sources: dict[str, str]) -> None:
        """The schema and, by the names it imports them under, the schemas it references."""
        sources[name] = schema.schema_str
        for reference in schema.references or []:
            if reference.name not in sources:
                referenced = self.registry.version(reference.subject, reference.version)
                self._gather(referenced, reference.name, sources)


def _compile(sources: dict[str, str]) -> FileDescriptor:
    """protoc in a child process: TensorFlow links its own copy of the protobuf C++ library,
    and protoc loaded beside it crashes the process (measured); a child also keeps a
    compiler fault on hostile schema text out of the daemon."""
    import grpc_tools

    # The well-known types (timestamp.proto, ...) ship with grpcio-tools.
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory(prefix="streamdet-proto-") as root:
        for name, text in sources.items():
            path = Path(root, name).resolve()
            if not path.is_relative_to(Path(root).resolve()):
                raise SchemaDoesNotCompile(f"a reference's name {name!r} leaves the schema tree")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        out = Path(root, "descriptors.pb")
        try:
            compiled = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "grpc_tools.protoc",
                    f"-I{root}",
                    f"-I{well_known}",
                    f"--descriptor_set_out={out}",
                    "--include_imports",
                    str(Path(root, SCHEMA_FILE)),
                ],
                capture_output=True,
                text=True,
                timeout=PROTOC_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise SchemaDoesNotCompile(f"protoc ran over {PROTOC_TIMEOUT_S}s") from None
        if compiled.returncode != 0 or not out.exists():
            problem = compiled.stderr.replace(root + os.sep, "").strip()
            raise SchemaDoesNotCompile(problem[:300] or f"protoc exited {compiled.returncode}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool.FindFileByName(SCHEMA_FILE)


def _fields(record: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in record.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if not repeated and field.has_presence and not record.HasField(field.name):
            continue
        value = getattr(record, field.name)
        if repeated:
            value = list(value)
        elif field.message_type is not None and field.message_type.full_name == TIMESTAMP:
            value = value.ToMilliseconds()
        fields[field.name] = value
    return fields
