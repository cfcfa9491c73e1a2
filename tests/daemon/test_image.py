"""Image topics through the daemon on a real broker: PNG, .npy and base64-in-JSON images;
planted odd images alert; undecodable or misshapen images go to the DLQ with the reason."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from kafka import KafkaProducer
from PIL import Image

from streamdet.config import MessageFormat
from streamdet.io.sources.base import Message
from streamdet.stream.decode import InvalidMessage, decode_image
from tests.daemon_helpers import alerts_until_planted_are_flagged, dead_letters
from tests.detectors.test_image_vae import strokes
from tests.helpers import free_port, write_daemon_config

SHAPE = (12, 12, 1)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image[..., 0] * 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def npy(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, image.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def test_decode_image_formats_and_reasons():
    fmt = MessageFormat(series_key="camera")
    image = strokes(1, 0, True)[0]
    for raw in (
        png(image),
        npy(image),
        json.dumps({"camera": "c1", "image": base64.b64encode(png(image)).decode()}).encode(),
    ):
        event = decode_image(Message("cams", 0, 1, b"k", raw, 5), fmt, SHAPE)
        np.testing.assert_allclose(event.values, image.reshape(-1), atol=1 / 255)
    assert event.series == "c1"
    cases = {
        b"GIF89a...": "undecodable_image",
        png(np.zeros((8, 8, 1))): "wrong_shape",
        npy(np.full(SHAPE, 3.0)): "wrong_type",
        b'{"camera": "c1"}': "missing_field",
        b'{"image": "***"}': "undecodable_image",
    }
    for raw, reason in cases.items():
        with pytest.raises(InvalidMessage) as info:
            decode_image(Message("cams", 0, 9, None, raw, 5), fmt, SHAPE)
        assert info.value.reason == reason, raw[:20]


@pytest.mark.kafka
def test_image_topic_alerts_on_odd_images_and_dead_letters_bad_ones(
    kafka_bootstrap, new_topic, tmp_path
):
    topic, alerts_topic, dlq_topic = new_topic("cams"), new_topic("alerts"), new_topic("dlq")
    config = write_daemon_config(
        tmp_path,
        kafka_bootstrap,
        {
            "name": topic,
            "kind": "image",
            "format": {"image_shape": list(SHAPE), "series_key": None, "timestamp_field": None},
            "detector": {
                "name": "image_vae",
                "warmup_events": 600,
                "params": {"epochs": 30, "filters": 8, "batch_size": 32, "seed": 0},
            },
            "threshold": {"threshold_perc": 100},
        },
        alerts_topic,
        dlq_topic,
        free_port(),
    )
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for image in strokes(600, 0, vertical=True):
        producer.send(topic, key=b"cam-1", value=png(image))
    planted = []
    normal = strokes(200, 1, vertical=True)
    odd = strokes(8, 2, vertical=False)
    for i, image in enumerate(normal):
        producer.send(topic, key=b"cam-1", value=npy(image) if i % 2 else png(image))
        if i % 25 == 10:
            planted.append(
                producer.send(topic, key=b"cam-1", value=png(odd[len(planted)]))
                .get(timeout=30)
                .offset
            )
    bad = {b"not an image": "undecodable_image", png(np.zeros((8, 8, 1))): "wrong_shape"}
    for raw in bad:
        producer.send(topic, key=b"cam-1", value=raw).get(timeout=30)
    producer.close()

    alerts = alerts_until_planted_are_flagged(config, kafka_bootstrap, alerts_topic, planted)
    false_alarms = {a["window_end_offset"] for a in alerts} - set(planted)
    assert len(false_alarms) <= 4, sorted(false_alarms)
    assert alerts[0]["detector"] == "image_vae" and alerts[0]["series"] == "cam-1"
    letters = dead_letters(kafka_bootstrap, dlq_topic)
    assert letters == bad
