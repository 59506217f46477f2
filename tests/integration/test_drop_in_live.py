"""Differential tests that need real deliveries: confluent's Producer and ours in sidecar mode."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka import Producer as ConfluentProducer

from kafka_sidecar_client import Producer
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.processes import free_port
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from tests.support import create_topic

pytestmark = pytest.mark.integration

StartSidecar = Callable[..., SidecarProcess]
PointAt = Callable[[SidecarProcess], None]


def timed_out_codes(producer: Any, topic: str, count: int) -> tuple[set[int], float, int]:
    """Error codes of ``count`` events, the seconds until all were resolved, what is left."""
    codes: set[int] = set()
    started = time.monotonic()
    for n in range(count):
        producer.produce(topic, b"%d" % n, on_delivery=lambda err, _m: codes.add(err.code()))
    left = producer.flush(30)
    return codes, time.monotonic() - started, left


def test_sidecar_mode_honours_the_apps_message_timeout_as_confluent_does(
    start_sidecar: StartSidecar, sidecar_env: PointAt, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    # The sidecar keeps librdkafka's default of 300 s; the app asks for 1.5 s.
    sidecar = start_sidecar(bootstrap=nowhere, wait_ready=False)
    conf = {"bootstrap.servers": nowhere, "message.timeout.ms": 1500}
    theirs = timed_out_codes(ConfluentProducer(conf), "t", 20)
    sidecar_env(sidecar)
    mine = timed_out_codes(Producer(conf), "t", 20)
    assert theirs[0] == mine[0] == {KafkaError._MSG_TIMED_OUT}
    assert theirs[2] == mine[2] == 0
    assert mine[1] < 10


def test_produce_batch_goes_through_the_sidecar_with_one_callback_each(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    results = []
    makers: list[Callable[[dict[str, str]], Any]] = [ConfluentProducer, Producer]
    for make in makers:
        producer = make({"bootstrap.servers": kafka.bootstrap_servers})
        seen: list[KafkaError | None] = []

        def record(err: KafkaError | None, _msg: Any, seen: list[Any] = seen) -> None:
            seen.append(err)

        messages: list[dict[str, Any]] = [{"value": b"%d" % n, "key": b"k"} for n in range(10)]
        queued = producer.produce_batch(topic, messages, on_delivery=record)
        results.append((queued, producer.flush(30), seen))
    assert results[0] == results[1] == (10, 0, [None] * 10)
    assert metric_sum(sidecar.metrics(), "kafka_sidecar_events_accepted_total") == 10


def test_a_raising_delivery_callback_propagates_out_of_flush_in_both(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka)
    sidecar_env(start_sidecar())

    def boom(err: Any, msg: Any) -> None:
        raise ValueError("callback failed")

    for producer in (
        ConfluentProducer({"bootstrap.servers": kafka.bootstrap_servers}),
        Producer({"bootstrap.servers": kafka.bootstrap_servers}),
    ):
        producer.produce(topic, b"x", on_delivery=boom)
        with pytest.raises(ValueError, match="callback failed"):
            producer.flush(30)
        assert producer.flush(30) == 0
