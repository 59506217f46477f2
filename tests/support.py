"""Helpers tests share: unique names, topics made on the real cluster, reading a topic back."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kafka_sidecar_localenv.kafka import KafkaCluster


def unique_name(prefix: str) -> str:
    """A DNS-1123 name unique to this test run."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(cluster: KafkaCluster, partitions: int = 1, replication: int = 1) -> str:
    """A fresh topic, created and confirmed before the test produces to it."""
    name = unique_name("t")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication)]
    )
    futures[name].result(timeout=30)
    return name


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Message]:
    """Read ``topic`` from the beginning: at least ``expected`` messages (unless time runs out),
    then on until nothing more arrives for a second, so duplicates cannot hide missing events."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            messages.extend(m for m in batch if m.error() is None)
            if not batch and len(messages) >= expected:
                break
    finally:
        consumer.close()
    return messages
