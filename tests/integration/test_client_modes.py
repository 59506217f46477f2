"""Which path a Producer takes: direct (plain confluent), sidecar, or direct by necessity."""

from __future__ import annotations

from collections.abc import Callable

import confluent_kafka
import pytest

from kafka_sidecar_client import ClientConfigError, Producer
from kafka_sidecar_client.producer import DIRECT_REASONS
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from tests.support import consume_all, create_topic

pytestmark = pytest.mark.integration


def test_direct_mode_is_plain_confluent_kafka(
    kafka: KafkaCluster, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_SIDECAR_MODE", raising=False)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    # The confluent producer's own bound method: no wrapper on the hot path.
    assert isinstance(producer.produce.__self__, confluent_kafka.Producer)  # type: ignore[attr-defined]
    seen: list[tuple[int, int]] = []
    producer.produce(
        topic, b"v", on_delivery=lambda err, msg: seen.append((msg.partition(), msg.offset()))
    )
    assert producer.flush(30) == 0
    assert seen == [(0, 0)]
    assert len(producer.list_topics(timeout=10).topics) >= 1
    assert "id" not in str(consume_all(kafka.bootstrap_servers, topic, 1)[0].headers())


def test_transactional_producer_stays_direct_and_says_why(
    kafka: KafkaCluster,
    topic: str,
    start_sidecar: Callable[..., SidecarProcess],
    sidecar_env: Callable[[SidecarProcess], None],
) -> None:
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    before = sum(DIRECT_REASONS.values())
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": "tx-1"})
    assert producer.mode == "direct"
    assert sum(DIRECT_REASONS.values()) == before + 1
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"in-tx")
    producer.commit_transaction(30)
    assert [m.value() for m in consume_all(kafka.bootstrap_servers, topic, 1)] == [b"in-tx"]
    assert metric_sum(sidecar.metrics(), "kafka_sidecar_events_accepted_total") == 0


def test_non_producing_methods_reach_a_direct_producer_in_sidecar_mode(
    kafka: KafkaCluster,
    start_sidecar: Callable[..., SidecarProcess],
    sidecar_env: Callable[[SidecarProcess], None],
) -> None:
    topic = create_topic(kafka)
    sidecar_env(start_sidecar())
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    assert producer.mode == "sidecar"
    assert topic in producer.list_topics(timeout=10).topics


def test_sidecar_exposes_client_counters_by_app_and_topic(
    kafka: KafkaCluster,
    start_sidecar: Callable[..., SidecarProcess],
    sidecar_env: Callable[[SidecarProcess], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    monkeypatch.setenv("KAFKA_SIDECAR_APP", "checkout")
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for n in range(300):
        producer.produce(topic, f"{n}".encode())
    assert producer.flush(30) == 0
    producer.produce(topic, b"carries the counters of the first 300")
    assert producer.flush(30) == 0
    metrics = sidecar.metrics()
    labels = {"app": "checkout", "topic": topic}
    assert (
        metric_sum(metrics, "kafka_sidecar_client_events_total", outcome="attempts", **labels)
        >= 300
    )
    assert (
        metric_sum(metrics, "kafka_sidecar_client_events_total", outcome="acked", **labels) >= 300
    )
    assert (
        metric_sum(metrics, "kafka_sidecar_client_events_total", outcome="fallback", **labels) == 0
    )
    for name in (
        "kafka_sidecar_queue_depth",
        "kafka_sidecar_delivery_latency_seconds_count",
        "kafka_sidecar_emit_batch_events_count",
        "kafka_sidecar_broker_connections",
        "kafka_sidecar_producer_batch_size_bytes",
        "kafka_sidecar_ready",
    ):
        assert name in metrics
    assert metric_sum(metrics, "kafka_sidecar_delivery_latency_seconds_count") == 301


def test_bad_client_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SIDECAR_MODE", "sidecars")
    with pytest.raises(ClientConfigError, match="KAFKA_SIDECAR_MODE must be 'direct' or 'sidecar'"):
        Producer({"bootstrap.servers": "127.0.0.1:1"})
