"""Client pure parts: settings from env, batching limits, header normalising, error mapping."""

from __future__ import annotations

from collections import deque

import pytest
from confluent_kafka import KafkaError

from kafka_sidecar_api.v1.sidecar_pb2 import DeliveryReport, ErrorCode, ProduceBatch
from kafka_sidecar_client.config import ClientConfigError, ClientSettings
from kafka_sidecar_client.delivery import DeliveredMessage, refusal_error, report_error
from kafka_sidecar_client.events import (
    Event,
    add_to_batch,
    normalize_headers,
    take_batch,
    to_bytes,
)

pytestmark = pytest.mark.unit


def event(sequence: int, size: int = 10) -> Event:
    made = Event("t", b"x" * size, None, -1, 0, None, None, size)
    made.sequence = sequence
    return made


def test_settings_default_to_direct_mode_with_direct_fallback() -> None:
    settings = ClientSettings.from_env({})
    assert settings.mode == "direct"
    assert settings.fallback == "direct"
    assert settings.address == "unix:///var/run/kafka-sidecar/sidecar.sock"


def test_settings_read_the_injected_env_flags() -> None:
    settings = ClientSettings.from_env(
        {
            "KAFKA_SIDECAR_MODE": "sidecar",
            "KAFKA_SIDECAR_ADDRESS": "unix:///s.sock",
            "KAFKA_SIDECAR_FALLBACK": "none",
            "KAFKA_SIDECAR_APP": "web",
            "KAFKA_SIDECAR_LINGER_MS": "2.5",
        }
    )
    assert (settings.mode, settings.address, settings.fallback, settings.app) == (
        "sidecar",
        "unix:///s.sock",
        "none",
        "web",
    )
    assert settings.linger_ms == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SIDECAR_MODE": "proxy"}, "KAFKA_SIDECAR_MODE must be 'direct' or 'sidecar'"),
        ({"KAFKA_SIDECAR_FALLBACK": "maybe"}, "KAFKA_SIDECAR_FALLBACK must be 'direct' or 'none'"),
        (
            {"KAFKA_SIDECAR_BATCH_MAX_EVENTS": "0"},
            "KAFKA_SIDECAR_BATCH_MAX_EVENTS must be a positive",
        ),
        ({"KAFKA_SIDECAR_LINGER_MS": "-1"}, "KAFKA_SIDECAR_LINGER_MS must be"),
        ({"KAFKA_SIDECAR_RPC_TIMEOUT_MS": "fast"}, "KAFKA_SIDECAR_RPC_TIMEOUT_MS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClientConfigError, match=message):
        ClientSettings.from_env(env)


def test_batches_are_cut_by_count_and_bytes_keeping_order() -> None:
    queue = deque(event(n) for n in range(1, 8))
    assert [e.sequence for e in take_batch(queue, max_events=3, max_bytes=1000)] == [1, 2, 3]
    assert [e.sequence for e in take_batch(queue, max_events=10, max_bytes=25)] == [4, 5]
    assert [e.sequence for e in take_batch(queue, max_events=10, max_bytes=1000)] == [6, 7]


def test_an_event_larger_than_the_byte_limit_still_moves_alone() -> None:
    queue = deque([event(1, size=5000), event(2)])
    assert [e.sequence for e in take_batch(queue, 10, 100)] == [1]


def test_headers_and_payloads_are_normalised_like_confluent() -> None:
    assert normalize_headers({"a": "1", "b": None}) == [("a", b"1"), ("b", None)]
    assert normalize_headers([("a", b"1")]) == [("a", b"1")]
    assert to_bytes("é", 2) == "é".encode()
    with pytest.raises(TypeError, match="a bytes-like object is required, not 'int'"):
        to_bytes(12, 2)
    with pytest.raises(TypeError, match="header key to be unicode string"):
        normalize_headers([(1, b"x")])


def test_requests_keep_absent_fields_absent() -> None:
    batch = ProduceBatch()
    add_to_batch(
        batch,
        [
            Event("t", None, b"k", -1, 0, [("h", None)], None, 1),
            Event("t", b"", None, 3, 0, None, None, 0),
        ],
    )
    request, second = batch.events
    assert not request.HasField("event_bytes")
    assert not request.HasField("partition")
    assert request.key == b"k"
    assert not request.headers[0].HasField("value")
    assert second.HasField("event_bytes")  # empty bytes is a value, unlike None
    assert not second.HasField("key")
    assert second.partition == 3


def test_sidecar_refusals_map_to_the_errors_a_direct_producer_raises() -> None:
    assert (
        refusal_error(ErrorCode.ERROR_CODE_MESSAGE_TOO_LARGE, "m").code()
        == KafkaError.MSG_SIZE_TOO_LARGE
    )
    assert refusal_error(ErrorCode.ERROR_CODE_TOPIC_NOT_ALLOWED, "m").code() == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    timed_out = report_error(
        DeliveryReport(
            error_code=ErrorCode.ERROR_CODE_KAFKA_UNAVAILABLE,
            kafka_error_code=KafkaError._MSG_TIMED_OUT,
            error_message="timed out",
        )
    )
    assert timed_out is not None
    assert timed_out.code() == KafkaError._MSG_TIMED_OUT
    assert report_error(DeliveryReport()) is None


def test_delivered_message_offers_confluents_accessors() -> None:
    source = Event("t", b"v", b"k", -1, 0, [("h", b"1")], None, 2)
    msg = DeliveredMessage(source, None, 3, 42, 1700, 0.5)
    assert (msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value()) == (
        "t",
        3,
        42,
        b"k",
        b"v",
    )
    assert msg.headers() == [("h", b"1")]
    assert msg.error() is None
    assert msg.latency() == 0.5
    assert msg.timestamp()[1] == 1700
    assert len(msg) == 1
