"""Failures on the data path: backpressure, a killed or stopped sidecar, a Kafka outage."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from kafka_sidecar_client import Producer
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.processes import free_port
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from tests import workers
from tests.support import consume_all, create_topic

pytestmark = pytest.mark.integration

StartSidecar = Callable[..., SidecarProcess]
PointAt = Callable[[SidecarProcess], None]


def test_full_sidecar_buffer_pushes_back_and_loses_nothing(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar(
        KAFKA_PRODUCER_QUEUE_BUFFERING_MAX_MESSAGES="20",
        KAFKA_PRODUCER_LINGER_MS="20",
        KAFKA_SIDECAR_RETRY_AFTER_MS="5",
    )
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    result = workers.produce_sequence(producer, topic, worker=0, count=20_000)
    assert result["left"] == 0
    assert result["error_count"] == 0
    metrics = sidecar.metrics()
    pushed_back = metric_sum(
        metrics, "kafka_sidecar_requests_total", code="RESOURCE_EXHAUSTED"
    ) + metric_sum(metrics, "kafka_sidecar_events_rejected_total", code="ERROR_CODE_BUFFER_FULL")
    assert pushed_back > 0
    assert result["counters"][topic]["fallback"] == 0  # backpressure is not an outage
    order = workers.check_order(consume_all(kafka.bootstrap_servers, topic, 20_000), 1, 20_000)
    assert order["duplicates"] == 0


def test_killed_sidecar_fails_over_to_direct_with_every_event_delivered_at_least_once(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka, partitions=2)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    result = workers.produce_sequence(producer, topic, 0, 100_000, interrupt=(30_000, sidecar.kill))
    assert (result["left"], result["error_count"]) == (0, 0)
    counters = producer.emission_counters()[topic]
    assert counters["fallback"] > 0
    assert counters["acked"] == 100_000
    consumed = consume_all(kafka.bootstrap_servers, topic, 100_000, timeout=120)
    order = workers.check_order(consumed, workers=1, count=100_000)
    # Duplicates are possible and counted: never more than the client re-sent.
    assert order["duplicates"] <= counters["resent"]
    duplicated_ids = [i for i, n in workers.id_headers(consumed).items() if n > 1]
    assert len(duplicated_ids) == order["duplicates"]


def test_sigterm_drains_the_sidecar_with_zero_loss_and_exit_zero(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka, partitions=2)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    result = workers.produce_sequence(
        producer, topic, 0, 50_000, interrupt=(20_000, sidecar.terminate)
    )
    assert (result["left"], result["error_count"]) == (0, 0)
    assert sidecar.wait(timeout=60) == 0
    counters = producer.emission_counters()[topic]
    assert counters["acked"] == 50_000
    consumed = consume_all(kafka.bootstrap_servers, topic, 50_000, timeout=120)
    order = workers.check_order(consumed, workers=1, count=50_000)
    assert order["duplicates"] == counters["resent"] == 0  # drained, so nothing was re-sent
    assert "Shut down after draining" in sidecar.workdir.joinpath("sidecar.log").read_text()


def test_client_returns_to_a_restarted_sidecar(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    first = workers.produce_sequence(producer, topic, worker=0, count=1000)
    sidecar.kill()
    during = workers.produce_sequence(producer, topic, worker=1, count=1000)
    assert producer.emission_counters()[topic]["fallback"] >= 1000
    sidecar.start()
    deadline = time.monotonic() + 30
    while True:
        after = workers.produce_sequence(producer, topic, worker=2, count=100)
        if metric_sum(sidecar.metrics(), "kafka_sidecar_events_acked_total", topic=topic) > 0:
            break
        assert time.monotonic() < deadline, "client never came back to the sidecar"
    for result in (first, during, after):
        assert result["left"] == 0
        assert result["error_count"] == 0


def test_kafka_outage_behind_a_healthy_sidecar_reports_errors_without_falling_back(
    start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    sidecar = start_sidecar(
        bootstrap=nowhere, wait_ready=False, KAFKA_PRODUCER_MESSAGE_TIMEOUT_MS="1500"
    )
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": nowhere})
    errors: list[KafkaError] = []
    for n in range(100):
        producer.produce(
            "outage", f"{n}".encode(), on_delivery=lambda err, _msg: errors.append(err)
        )
    assert producer.flush(30) == 0
    assert len(errors) == 100
    assert {e.code() for e in errors} == {KafkaError._MSG_TIMED_OUT}
    counters = producer.emission_counters()["outage"]
    assert counters["fallback"] == 0
    assert counters["failed"] == 100
    assert producer._sidecar is not None
    assert not producer._sidecar.fallback.created  # no direct connections were even tried
    assert (
        metric_sum(
            sidecar.metrics(),
            "kafka_sidecar_events_failed_total",
            code="ERROR_CODE_KAFKA_UNAVAILABLE",
        )
        == 100
    )
