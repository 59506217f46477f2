"""A client that does not read its reports is pushed back; its reports wait and none is dropped."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from kafka_sidecar_api.v1 import sidecar_pb2_grpc
from kafka_sidecar_api.v1.sidecar_pb2 import (
    ErrorCode,
    ProduceBatch,
    ProduceRequest,
    SubscribeRequest,
)
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess
from tests.support import create_topic

pytestmark = pytest.mark.integration


def batch(client_id: str, topic: str, sequences: range) -> ProduceBatch:
    return ProduceBatch(
        client_id=client_id,
        events=[ProduceRequest(topic=topic, sequence=s, event_bytes=b"v") for s in sequences],
    )


def test_a_client_that_does_not_read_its_reports_gets_buffer_full_and_loses_no_report(
    kafka: KafkaCluster, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar(KAFKA_SIDECAR_REPORT_BUFFER_SIZE="100")
    with grpc.insecure_channel(sidecar.address) as channel:
        stub = sidecar_pb2_grpc.ProducerSidecarStub(channel)
        answer = stub.EmitBatch(batch("slow", topic, range(1, 151)), timeout=10)
        assert [a.received for a in answer.acks] == [True] * 100 + [False] * 50
        assert {a.error_code for a in answer.acks[100:]} == {ErrorCode.ERROR_CODE_BUFFER_FULL}
        time.sleep(1)  # delivered by now: the reports wait for their reader
        with pytest.raises(grpc.RpcError) as refused:
            stub.EmitBatch(batch("slow", topic, range(101, 102)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        other = stub.EmitBatch(batch("other", topic, range(1, 2)), timeout=10)
        assert other.acks[0].received  # another client is not held back

        stream = stub.SubscribeReports(SubscribeRequest(client_id="slow"), timeout=30)
        sequences: list[int] = []
        dropped = 0
        for message in stream:
            sequences.extend(r.sequence for r in message.reports)
            dropped += message.dropped
            if len(sequences) >= 100:
                break
        stream.cancel()
        assert sorted(sequences) == list(range(1, 101))
        assert dropped == 0
        again = stub.EmitBatch(batch("slow", topic, range(101, 151)), timeout=10)
        assert all(a.received for a in again.acks)
