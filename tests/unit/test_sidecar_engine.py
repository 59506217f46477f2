"""The sidecar's engine with a fake producer: acks in order, backpressure, report routing."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from kafka_sidecar.config import SidecarConfig
from kafka_sidecar.engine import Engine, report_batch
from kafka_sidecar.metrics import SidecarMetrics
from kafka_sidecar_api.v1.sidecar_pb2 import ErrorCode, Header, ProduceRequest

pytestmark = pytest.mark.unit


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1234)

    def latency(self) -> float:
        return 0.002


class FakeProducer:
    """Keeps produced events until poll(); refuses beyond ``capacity`` like librdkafka."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.queue: list[dict[str, Any]] = []
        self.offset = 0

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        if len(self.queue) >= self.capacity:
            raise BufferError("Local: Queue full")
        names = ("value", "key", "partition", "on_delivery", "callback", "timestamp", "headers")
        self.queue.append({"topic": topic, **dict(zip(names, args, strict=False)), **kwargs})

    def poll(self, timeout: float = 0) -> int:
        served = self.queue
        self.queue = []
        for entry in served:
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if entry["value"] == b"fail" else None
            entry["on_delivery"](error, FakeMessage(entry["topic"], 0, self.offset))
            self.offset += 1
        return len(served)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self.queue)


def make_engine(capacity: int = 1000, **env: str) -> tuple[Engine, FakeProducer]:
    producer = FakeProducer(capacity)
    config = SidecarConfig.from_env(
        {
            "KAFKA_PRODUCER_BOOTSTRAP_SERVERS": "k:1",
            "KAFKA_SIDECAR_REPORT_BUFFER_SIZE": "3",
            "KAFKA_SIDECAR_RETRY_AFTER_MS": "25",
            **env,
        }
    )
    return Engine(producer, config, SidecarMetrics()), producer


def events(*sequences: int, topic: str = "t", value: bytes = b"v") -> list[ProduceRequest]:
    return [ProduceRequest(topic=topic, sequence=s, event_bytes=value) for s in sequences]


def test_events_are_produced_in_order_with_the_id_header() -> None:
    engine, producer = make_engine()
    request = ProduceRequest(
        topic="t",
        sequence=1,
        event_bytes=b"v",
        key=b"k",
        partition=2,
        headers=[Header(key="h", value=b"1"), Header(key="n")],
    )
    answer, full = engine.emit("c1", [request, *events(2, 3)])
    assert not full
    assert [a.received for a in answer.acks] == [True, True, True]
    assert answer.sidecar_id == engine.sidecar_id
    first = producer.queue[0]
    assert (first["key"], first["partition"]) == (b"k", 2)
    assert first["headers"] == [("h", b"1"), ("n", None), ("kafka-sidecar-id", b"c1:1")]
    assert [q["headers"][-1][1] for q in producer.queue] == [b"c1:1", b"c1:2", b"c1:3"]
    assert producer.queue[1]["partition"] == -1  # absent = the partitioner decides


def test_null_value_and_key_stay_null() -> None:
    engine, producer = make_engine()
    engine.emit("c1", [ProduceRequest(topic="t", sequence=1)])
    assert (producer.queue[0]["value"], producer.queue[0]["key"]) == (None, None)


def test_full_buffer_refuses_the_event_and_every_later_one() -> None:
    engine, _ = make_engine(capacity=2)
    answer, full = engine.emit("c1", events(1, 2, 3, 4))
    assert not full  # two fitted: the caller gets per-event acks, not RESOURCE_EXHAUSTED
    assert [a.received for a in answer.acks] == [True, True, False, False]
    assert {a.error_code for a in answer.acks[2:]} == {ErrorCode.ERROR_CODE_BUFFER_FULL}
    assert {a.retry_after_ms for a in answer.acks[2:]} == {25}
    _, full = engine.emit("c1", events(5))
    assert full


def test_invalid_event_is_refused_alone() -> None:
    engine, producer = make_engine()
    answer, _ = engine.emit("c1", [*events(1), *events(2, topic="no good"), *events(3)])
    assert [a.error_code for a in answer.acks] == [
        ErrorCode.ERROR_CODE_NONE,
        ErrorCode.ERROR_CODE_INVALID_TOPIC,
        ErrorCode.ERROR_CODE_NONE,
    ]
    assert len(producer.queue) == 2


def test_reports_reach_their_own_client_only() -> None:
    engine, producer = make_engine()
    engine.emit("a", events(1, 2))
    engine.emit("b", events(1))
    producer.poll()
    engine.after_poll()
    reports_a, dropped = engine.take_reports(engine.clients["a"])
    assert [r[0] for r in reports_a] == [1, 2]
    assert dropped == 0
    reports_b, _ = engine.take_reports(engine.clients["b"])
    assert [r[0] for r in reports_b] == [1]


def test_a_client_holding_its_share_of_unread_reports_gets_buffer_full_and_none_is_dropped() -> (
    None
):
    engine, producer = make_engine()  # 3 events per client at once
    answer, _ = engine.emit("a", events(1, 2, 3, 4, 5))
    assert [a.received for a in answer.acks] == [True, True, True, False, False]
    assert answer.acks[3].error_code == ErrorCode.ERROR_CODE_BUFFER_FULL
    other, _ = engine.emit("b", events(1))  # another client is not held back
    assert other.acks[0].received
    producer.poll()
    engine.after_poll()
    _, nothing_fits = engine.emit("a", events(4))  # delivered but unread still counts
    assert nothing_fits
    reports, dropped = engine.take_reports(engine.clients["a"])
    assert [r[0] for r in reports] == [1, 2, 3]
    assert dropped == 0
    answer, _ = engine.emit("a", events(4, 5))
    assert [a.received for a in answer.acks] == [True, True]


def test_a_client_over_its_bytes_in_the_producer_gets_buffer_full() -> None:
    engine, producer = make_engine(KAFKA_SIDECAR_CLIENT_MAX_BYTES="10")
    answer, _ = engine.emit("a", events(1, 2, 3, value=b"x" * 4))
    assert [a.received for a in answer.acks] == [True, True, False]
    producer.poll()  # the producer is done with them: the bytes are free again
    answer, _ = engine.emit("a", events(3, value=b"x" * 4))
    assert answer.acks[0].received


def test_eviction_skips_clients_pinned_by_readers_or_queued_events() -> None:
    engine, _ = make_engine(KAFKA_SIDECAR_MAX_CLIENTS="2")
    engine.emit("pinned", events(1))  # in the producer: may not be forgotten
    engine.client("reader").subscribed = 1
    for n in range(50):
        engine.client(f"idle-{n}")
    assert set(engine.clients) == {"pinned", "reader", "idle-49"}
    assert engine.metrics.clients._value.get() == 3


def test_a_forgotten_clients_unread_reports_are_counted_as_dropped() -> None:
    engine, producer = make_engine(KAFKA_SIDECAR_MAX_CLIENTS="1")
    engine.emit("gone", events(1, 2))
    producer.poll()
    engine.after_poll()
    engine.client("new")
    assert "gone" not in engine.clients
    assert engine.metrics.reports_dropped._value.get() == 2


def test_failed_delivery_becomes_a_report_with_codes() -> None:
    engine, producer = make_engine()
    engine.emit("a", events(1, value=b"fail"))
    producer.poll()
    engine.after_poll()
    reports, _ = engine.take_reports(engine.clients["a"])
    (report,) = report_batch(reports).reports
    assert report.error_code == ErrorCode.ERROR_CODE_KAFKA_UNAVAILABLE
    assert report.kafka_error_code == KafkaError._MSG_TIMED_OUT
    assert report.offset == -1
    assert report.retriable


def test_idle_means_no_queued_event_and_no_unread_report() -> None:
    engine, producer = make_engine()
    assert engine.idle()
    engine.emit("a", events(1))
    assert not engine.idle()
    producer.poll()
    engine.after_poll()
    assert not engine.idle()  # the report still waits for its reader
    engine.take_reports(engine.clients["a"])
    assert engine.idle()
