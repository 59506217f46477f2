"""The gRPC API spoken directly, as a client in another language would: every documented code."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kafka_sidecar_api.v1 import sidecar_pb2_grpc
from kafka_sidecar_api.v1.sidecar_pb2 import (
    ErrorCode,
    Header,
    ProduceBatch,
    ProduceRequest,
    SubscribeRequest,
)
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess
from tests.support import create_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def stub(
    kafka: KafkaCluster, start_sidecar: Callable[..., SidecarProcess]
) -> Iterator[sidecar_pb2_grpc.ProducerSidecarStub]:
    sidecar = start_sidecar(
        KAFKA_SIDECAR_ALLOWED_TOPICS="t-*,allowed", KAFKA_PRODUCER_MESSAGE_MAX_BYTES="2000"
    )
    with grpc.insecure_channel(sidecar.address) as channel:
        yield sidecar_pb2_grpc.ProducerSidecarStub(channel)


def event(topic: str, sequence: int, **fields: object) -> ProduceRequest:
    return ProduceRequest(topic=topic, sequence=sequence, event_bytes=b"v", **fields)


@pytest.mark.parametrize(
    ("request_event", "code", "names"),
    [
        (event("t-x", 0), ErrorCode.ERROR_CODE_INVALID_REQUEST, "sequence"),
        (event("", 1), ErrorCode.ERROR_CODE_INVALID_REQUEST, "topic"),
        (event("bad topic!", 1), ErrorCode.ERROR_CODE_INVALID_TOPIC, "topic"),
        (event("..", 1), ErrorCode.ERROR_CODE_INVALID_TOPIC, "topic"),
        (
            event("elsewhere", 1),
            ErrorCode.ERROR_CODE_TOPIC_NOT_ALLOWED,
            "KAFKA_SIDECAR_ALLOWED_TOPICS",
        ),
        (
            ProduceRequest(topic="t-x", sequence=1, event_bytes=b"v" * 2001),
            ErrorCode.ERROR_CODE_MESSAGE_TOO_LARGE,
            "message.max.bytes",
        ),
        (
            event("t-x", 1, headers=[Header(key="", value=b"v")]),
            ErrorCode.ERROR_CODE_INVALID_HEADERS,
            "headers[0].key",
        ),
        (
            event("t-x", 1, headers=[Header(key="kafka-sidecar-id", value=b"v")]),
            ErrorCode.ERROR_CODE_INVALID_HEADERS,
            "reserved",
        ),
        (event("t-x", 1, partition=-5), ErrorCode.ERROR_CODE_INVALID_REQUEST, "partition"),
    ],
)
def test_bad_event_gets_its_documented_code_and_a_message_naming_the_field(
    stub: sidecar_pb2_grpc.ProducerSidecarStub,
    request_event: ProduceRequest,
    code: ErrorCode.ValueType,
    names: str,
) -> None:
    answer = stub.EmitBatch(ProduceBatch(client_id="c", events=[request_event]))
    (ack,) = answer.acks
    assert not ack.received
    assert ack.error_code == code
    assert names in ack.error_message


def test_bad_events_do_not_stop_the_good_ones_around_them(
    kafka: KafkaCluster, stub: sidecar_pb2_grpc.ProducerSidecarStub
) -> None:
    topic = create_topic(kafka)
    renamed = "t-" + topic.removeprefix("t-")
    answer = stub.EmitBatch(
        ProduceBatch(
            client_id="c", events=[event(renamed, 1), event("bad topic!", 2), event(renamed, 3)]
        )
    )
    assert [a.received for a in answer.acks] == [True, False, True]
    assert [a.sequence for a in answer.acks] == [1, 2, 3]


def test_missing_client_id_is_an_invalid_argument(
    stub: sidecar_pb2_grpc.ProducerSidecarStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.EmitBatch(ProduceBatch(events=[event("t-x", 1)]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "client_id" in raised.value.details()


def test_unknown_partition_of_a_known_topic_is_refused(
    kafka: KafkaCluster, stub: sidecar_pb2_grpc.ProducerSidecarStub
) -> None:
    topic = create_topic(kafka)
    ok = stub.EmitBatch(ProduceBatch(client_id="c", events=[event(topic, 1)]))
    assert ok.acks[0].received
    reports = stub.SubscribeReports(SubscribeRequest(client_id="c"))
    for batch in reports:  # wait for the first report: metadata for the topic is known then
        if batch.reports:
            break
    reports.cancel()
    answer = stub.Emit(event(topic, 2, partition=7, client_id="c"))
    assert answer.error_code == ErrorCode.ERROR_CODE_UNKNOWN_PARTITION


def test_single_emit_reports_delivery_on_the_stream(
    kafka: KafkaCluster, stub: sidecar_pb2_grpc.ProducerSidecarStub
) -> None:
    topic = create_topic(kafka)
    ack = stub.Emit(
        ProduceRequest(topic=topic, client_id="one", sequence=1, event_bytes=b"x", key=b"k")
    )
    assert ack.received
    assert ack.sequence == 1
    stream = stub.SubscribeReports(SubscribeRequest(client_id="one"))
    first = next(stream)
    assert first.sidecar_id
    report = next(stream).reports[0]
    stream.cancel()
    assert (report.sequence, report.topic, report.partition, report.offset) == (1, topic, 0, 0)
    assert report.error_code == ErrorCode.ERROR_CODE_NONE


def test_health_service_reports_serving(
    kafka: KafkaCluster, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = start_sidecar()
    with grpc.insecure_channel(sidecar.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "kafka_sidecar.v1.ProducerSidecar"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
