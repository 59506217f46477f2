"""The local Kafka is a real broker: it stores what is produced and survives a broker loss."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message, Producer

from kafka_sidecar_localenv.kafka import KafkaCluster
from tests.support import consume_all, create_topic

pytestmark = pytest.mark.integration


def test_ten_thousand_messages_produced_are_all_consumed_back(
    kafka: KafkaCluster, topic: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for i in range(10_000):
        producer.produce(topic, value=str(i).encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []

    values = [int(m.value() or b"-1") for m in consume_all(kafka.bootstrap_servers, topic, 10_000)]
    assert values == list(range(10_000))


@pytest.mark.brokers3
def test_replicated_topic_keeps_accepting_acks_all_writes_with_one_broker_stopped(
    kafka3: KafkaCluster,
) -> None:
    topic = create_topic(kafka3, partitions=3, replication=3)
    producer = Producer(
        {"bootstrap.servers": kafka3.bootstrap_servers, "acks": "all", "enable.idempotence": True}
    )
    delivered: list[Message] = []
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        (failed.append(err) if err is not None else delivered.append(msg))

    def produce_batch(start: int) -> None:
        for i in range(start, start + 1000):
            producer.produce(topic, value=str(i).encode(), partition=i % 3, on_delivery=on_delivery)
            producer.poll(0)
        assert producer.flush(60) == 0

    produce_batch(0)
    stopped = kafka3.nodes[1]
    kafka3.stop_node(stopped)
    try:
        produce_batch(1000)
        assert failed == []
        assert len(delivered) == 2000
        # Every partition (one led by the stopped broker) took writes acknowledged by the two
        # replicas left in sync.
        assert {m.partition() for m in delivered[1000:]} == {0, 1, 2}
        consumed = consume_all(kafka3.bootstrap_servers, topic, 2000)
        assert sorted(int(m.value() or b"-1") for m in consumed) == list(range(2000))
    finally:
        kafka3.start_node(stopped)
        kafka3.wait_ready()
