"""The data path on the real broker: client → sidecar → Kafka, and the reports back."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from kafka_sidecar_client import Producer
from kafka_sidecar_localenv.connections import broker_connections
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from tests import workers
from tests.support import consume_all, create_topic

pytestmark = pytest.mark.integration

StartSidecar = Callable[..., SidecarProcess]


def assert_reports_match_kafka(results: list[dict[str, Any]], consumed: list[Any]) -> None:
    """Every callback named the partition and offset the event really has in Kafka."""
    actual = workers.offsets_by_value(consumed)
    for result in results:
        assert result["left"] == 0
        assert result["error_count"] == 0, result["errors"]
        for seq, (partition, offset) in result["reports"].items():
            assert actual[(result["worker"], int(seq))] == (partition, offset)


def test_one_process_gets_a_callback_with_partition_and_offset_for_every_event(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: Callable[[SidecarProcess], None]
) -> None:
    topic = create_topic(kafka, partitions=3)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    result = workers.produce_sequence(producer, topic, worker=0, count=5000)
    assert len(result["reports"]) == 5000
    consumed = consume_all(kafka.bootstrap_servers, topic, 5000)
    assert_reports_match_kafka([result], consumed)
    assert result["counters"][topic] == {
        "attempts": 5000,
        "acked": 5000,
        "failed": 0,
        "fallback": 0,
        "resent": 0,
    }
    metrics = sidecar.metrics()
    assert metric_sum(metrics, "kafka_sidecar_events_acked_total", topic=topic) == 5000
    # Every event carries the id header consumers deduplicate on.
    assert len(workers.id_headers(consumed)) == 5000


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_eight_processes_keep_per_key_order_and_lose_nothing(
    method: str,
    kafka: KafkaCluster,
    start_sidecar: StartSidecar,
    sidecar_env: Callable[[SidecarProcess], None],
) -> None:
    topic = create_topic(kafka, partitions=4)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    count = 10_000
    if method == "fork":
        # Created and used in the parent before fork: children inherit a producer with threads.
        parent = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        warmup = workers.produce_sequence(parent, topic, worker=99, count=10)
        assert warmup["left"] == 0
        workers.INHERITED["producer"] = parent
        results = workers.run_workers(
            "fork", workers.forked_worker, [(topic, w, count) for w in range(8)]
        )
        after = workers.produce_sequence(parent, topic, worker=98, count=10)  # parent still works
        assert after["left"] == 0
    else:
        results = workers.run_workers(
            "spawn",
            workers.spawned_worker,
            [(kafka.bootstrap_servers, topic, w, count) for w in range(8)],
        )
    extra = 20 if method == "fork" else 0
    consumed = consume_all(kafka.bootstrap_servers, topic, 8 * count + extra, timeout=120)
    ours = [m for m in consumed if int((m.value() or b"0:0").split(b":")[0]) < 8]
    order = workers.check_order(ours, workers=8, count=count)
    assert order["duplicates"] == 0
    assert_reports_match_kafka(results, ours)
    assert all(len(r["reports"]) == count for r in results)


def test_client_processes_open_no_broker_connections_in_sidecar_mode(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: Callable[[SidecarProcess], None]
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(topic, b"x")
    assert producer.flush(30) == 0
    ports = [node.port for node in kafka.nodes]
    assert broker_connections([os.getpid()], ports) == 0
    assert broker_connections([sidecar.pid], ports) >= 1
