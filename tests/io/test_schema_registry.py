"""Avro and Protobuf records in the Confluent wire format, read against a real schema registry
(Apicurio Registry's Confluent-compatible API, with basic auth): good records become events,
hostile ones an InvalidMessage with the reason, and a registry that cannot answer is told
apart from a record that names a schema nobody registered."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.schema_registry.common.serde import SchemaId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.config import SchemaRegistryConfig, load_config_text
from streamdet.io.schema_registry import RegistryUnavailable, SchemaRegistry
from streamdet.io.sources.base import Message
from streamdet.stream.decode import REASONS, InvalidMessage, decode_image, decode_timeseries
from streamdet.stream.record_readers import record_reader
from tests.helpers import free_port

TS = 1_800_000_000_000
READING_V1 = {
    "type": "record",
    "name": "Reading",
    "namespace": "plant",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "value", "type": "double"},
    ],
}
# v2 renames value (an alias keeps old records readable) and adds a field with a default.
READING_V2 = {
    **READING_V1,
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "reading", "type": "double", "aliases": ["value"]},
        {"name": "unit", "type": "string", "default": "bar"},
    ],
}
PROTO_UNITS = 'syntax = "proto3";\npackage plant;\nenum Unit { BAR = 0; KELVIN = 1; }\n'
PROTO_READING = """syntax = "proto3";
package plant;
import "google/protobuf/timestamp.proto";
import "plant/units.proto";
message Envelope { string origin = 1; }
message Site {
  message Reading {
    string sensor = 1;
    google.protobuf.Timestamp ts = 2;
    optional double value = 3;
    plant.Unit unit = 4;
    bytes image = 5;
  }
}
"""


def subject() -> str:
    return f"s-{uuid.uuid4().hex[:10]}-value"


def config_for(registry: dict[str, str], encoding: str, **fmt: object) -> object:
    text = json.dumps(
        {
            "schema_registry": {
                "url": registry["url"],
                "username": registry["username"],
                "password": registry["password"],
            },
            "topics": [
                {
                    "name": "plant",
                    "format": {"encoding": encoding, **fmt},
                    "detector": {"name": "seq2seq"},
                }
            ],
        }
    )
    return load_config_text(text, environ={})


def reader_for(registry: dict[str, str], encoding: str, **fmt: object):
    config = config_for(registry, encoding, **fmt)
    client = SchemaRegistry(config.schema_registry)
    return client, config.topics[0], record_reader(config.topics[0], client)


def register(client: SchemaRegistry, subject_name: str, schema: Schema) -> int:
    return client.client.register_schema(subject_name, schema)


def avro_record(schema_id: int, schema: dict, record: dict) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return SchemaId("AVRO", schema_id).id_to_bytes() + body.getvalue()


def message(raw: bytes, offset: int = 3) -> Message:
    return Message("plant", 0, offset, None, raw, TS)


def reason_of(read, raw: bytes, topic) -> str:
    with pytest.raises(InvalidMessage) as caught:
        decode_timeseries(message(raw), topic.format, limits=topic.limits, read_record=read)
    return caught.value.reason


def test_avro_records_read_with_the_writers_schema(schema_registry):
    client, topic, read = reader_for(schema_registry, "avro")
    schema_id = register(client, subject(), Schema(json.dumps(READING_V1), "AVRO"))
    when = datetime.fromtimestamp(TS / 1000, UTC)
    raw = avro_record(schema_id, READING_V1, {"sensor": "pump-1", "ts": when, "value": 2.5})
    event = decode_timeseries(message(raw), topic.format, limits=topic.limits, read_record=read)
    assert (event.series, event.timestamp_ms, event.values.tolist()) == ("pump-1", TS, [2.5])
    requests = client.requests
    decode_timeseries(message(raw, 4), topic.format, limits=topic.limits, read_record=read)
    assert client.requests == requests  # the schema is cached after its first record


def test_avro_schema_evolution_reads_old_records_with_the_latest_schema(schema_registry):
    name = subject()
    client, topic, read = reader_for(
        schema_registry, "avro", reader_schema="latest", subject=name, value_fields=["reading"]
    )
    v1 = register(client, name, Schema(json.dumps(READING_V1), "AVRO"))
    old = avro_record(v1, READING_V1, {"sensor": "a", "ts": TS, "value": 7.0})
    v2 = register(client, name, Schema(json.dumps(READING_V2), "AVRO"))
    new = avro_record(v2, READING_V2, {"sensor": "a", "ts": TS, "reading": 8.0, "unit": "K"})
    for raw, value in ((old, 7.0), (new, 8.0)):
        event = decode_timeseries(message(raw), topic.format, read_record=read)
        assert event.values.tolist() == [value]

    # A record written with another subject's schema that cannot become the latest one.
    stranger = {**READING_V1, "fields": [{"name": "sensor", "type": "int"}]}
    other = register(client, subject(), Schema(json.dumps(stranger), "AVRO"))
    assert reason_of(read, avro_record(other, stranger, {"sensor": 3}), topic) == (
        "schema_mismatch"
    )


def test_hostile_avro_records_are_refused_with_their_reason(schema_registry):
    client, topic, read = reader_for(schema_registry, "avro")
    schema_id = register(client, subject(), Schema(json.dumps(READING_V1), "AVRO"))
    good = avro_record(schema_id, READING_V1, {"sensor": "a", "ts": TS, "value": 1.0})
    proto_id = register(client, subject(), Schema(PROTO_UNITS, "PROTOBUF"))
    unknown = SchemaId("AVRO", 987_654).id_to_bytes() + good[5:]
    cases = {
        "unknown schema id": (unknown, "unknown_schema"),
        "cut short": (good[:-3], "undecodable_record"),
        "bytes left over": (good + b"\x00\x01", "undecodable_record"),
        "plain JSON": (b'{"sensor": "a", "ts": 1, "value": 1}', "undecodable_record"),
        "header only": (good[:3], "undecodable_record"),
        "a Protobuf schema's id": (
            SchemaId("AVRO", proto_id).id_to_bytes() + good[5:],
            "schema_mismatch",
        ),
        "a string's length beyond the record": (
            good[:5] + b"\xfe\xff\xff\xff\x0f" + b"x",
            "undecodable_record",
        ),
    }
    for name, (raw, reason) in cases.items():
        assert reason_of(read, raw, topic) == reason, name
    requests = client.requests
    assert reason_of(read, unknown, topic) == "unknown_schema"
    assert client.requests == requests  # an unknown id is not asked again at once
    assert client.up


def register_reading(client: SchemaRegistry) -> int:
    """PROTO_READING with the units file it imports registered as its reference."""
    units = subject()
    register(client, units, Schema(PROTO_UNITS, "PROTOBUF"))
    schema = Schema(PROTO_READING, "PROTOBUF", [SchemaReference("plant/units.proto", units, 1)])
    return register(client, subject(), schema)


def compiled_reading(read, schema_id: int):
    """The Site.Reading message class of the schema as the reader compiled it."""
    from google.protobuf.message_factory import GetMessageClass

    from streamdet.stream.protobuf_records import SCHEMA_FILE

    file = read._file(message(b""), schema_id)
    assert file.name == SCHEMA_FILE
    return GetMessageClass(file.message_types_by_name["Site"].nested_types[0])


def test_protobuf_records_with_references_nested_types_and_timestamps(schema_registry):
    client, topic, read = reader_for(schema_registry, "protobuf")
    schema_id = register_reading(client)
    reading_type = compiled_reading(read, schema_id)

    def record(indexes: list[int], **fields: object) -> bytes:
        payload = reading_type(**fields)
        payload.ts.FromMilliseconds(TS)
        header = SchemaId("PROTOBUF", schema_id, message_indexes=indexes).id_to_bytes()
        return header + payload.SerializeToString()

    raw = record([1, 0], sensor="valve-2", value=0.25, unit=1)
    event = decode_timeseries(message(raw), topic.format, read_record=read)
    assert (event.series, event.timestamp_ms, event.values.tolist()) == ("valve-2", TS, [0.25])
    # An optional value the record does not set is missing, not 0.
    assert reason_of(read, record([1, 0], sensor="valve-2"), topic) == "missing_field"
    assert reason_of(read, record([7], sensor="x", value=1.0), topic) == "schema_mismatch"
    assert reason_of(read, raw[:-4], topic) == "undecodable_record"
    header = SchemaId("PROTOBUF", schema_id, message_indexes=[1, 0]).id_to_bytes()
    # Field 1 (the sensor) claims 2^35 bytes that the record does not hold.
    assert reason_of(read, header + b"\x0a\xff\xff\xff\xff\x7f", topic) == ("undecodable_record")


def test_protobuf_image_field_holds_the_image_bytes(schema_registry):
    import numpy as np

    client, _, _ = reader_for(schema_registry, "protobuf")
    schema_id = register_reading(client)
    config = config_for(schema_registry, "protobuf", image_shape=[2, 2, 1])
    read = record_reader(config.topics[0], client)
    reading_type = compiled_reading(read, schema_id)
    npy = io.BytesIO()
    np.save(npy, np.array([[[0.0], [0.5]], [[1.0], [0.25]]], np.float32))
    payload = reading_type(sensor="cam", image=npy.getvalue())
    raw = SchemaId("PROTOBUF", schema_id, message_indexes=[1, 0]).id_to_bytes()
    event = decode_image(
        message(raw + payload.SerializeToString()),
        config.topics[0].format,
        (2, 2, 1),
        read_record=read,
    )
    assert event.series == "cam" and event.values.tolist() == [0.0, 0.5, 1.0, 0.25]


def test_a_registry_refusing_credentials_or_not_answering_is_not_the_records_fault(
    schema_registry,
):
    refused = config_for({**schema_registry, "password": "wrong"}, "avro")
    client = SchemaRegistry(refused.schema_registry)
    read = record_reader(refused.topics[0], client)
    raw = SchemaId("AVRO", 1).id_to_bytes() + b"\x02a"
    with pytest.raises(RegistryUnavailable, match="credentials refused"):
        read(message(raw))
    assert not client.up and client.problem is not None
    assert "wrong" not in client.problem  # the password is never shown

    away = config_for({**schema_registry, "url": f"http://127.0.0.1:{free_port()}"}, "avro")
    client = SchemaRegistry(away.schema_registry)
    with pytest.raises(RegistryUnavailable, match="ConnectError"):
        record_reader(away.topics[0], client)(message(raw))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=64), protobuf=st.booleans())
def test_any_bytes_after_a_known_schema_id_are_an_event_or_a_named_reason(
    schema_registry, payload, protobuf
):
    encoding = "protobuf" if protobuf else "avro"
    client, topic, read = READERS.setdefault(encoding, reader_for(schema_registry, encoding))
    if encoding not in SCHEMA_IDS:
        schema = (
            Schema(
                PROTO_UNITS.replace("enum Unit { BAR = 0; KELVIN = 1; }", PROTO_FLAT), "PROTOBUF"
            )
            if protobuf
            else Schema(json.dumps(READING_V1), "AVRO")
        )
        SCHEMA_IDS[encoding] = register(client, subject(), schema)
    header = SchemaId(encoding.upper(), SCHEMA_IDS[encoding]).id_to_bytes()
    try:
        event = decode_timeseries(message(header + payload), topic.format, read_record=read)
    except InvalidMessage as exc:
        assert exc.reason in REASONS
    else:
        assert event.values.shape == (1,)


READERS: dict[str, tuple] = {}
SCHEMA_IDS: dict[str, int] = {}
PROTO_FLAT = "message Reading { string sensor = 1; int64 ts = 2; double value = 3; }"


def test_a_registry_over_tls_is_trusted_through_ssl_cafile_only(tmp_path):
    from tests.conftest import _load_script
    from tests.io.test_security import make_certificates

    local_registry = _load_script("local_registry")
    ca, _ = make_certificates(tmp_path / "certs")
    certificate, key = tmp_path / "certs" / "broker.crt", tmp_path / "certs" / "broker.key"
    url = local_registry.start(tmp_path / "registry", tls=(certificate, key))
    try:
        assert url.startswith("https://")
        trusted = SchemaRegistry(SchemaRegistryConfig(url=url, ssl_cafile=str(ca)))
        schema_id = trusted.client.register_schema(
            subject(), Schema(json.dumps(READING_V1), "AVRO")
        )
        assert trusted.schema(schema_id).schema_type == "AVRO"
        stranger = SchemaRegistry(SchemaRegistryConfig(url=url))  # the system's CAs only
        with pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            stranger.schema(schema_id)
    finally:
        local_registry.stop(tmp_path / "registry")
