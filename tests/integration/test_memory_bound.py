"""A broker outage under more load than the sidecar can take: memory stays under the container's
limit, clients are pushed back, and every accepted event is delivered once the brokers return."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from kafka_sidecar_client import Producer
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from tests.support import create_topic, unique_name

pytestmark = pytest.mark.integration

MEMORY_LIMIT = 256 * 1024 * 1024  # a typical sidecar container limit
VALUE = os.urandom(4096)
CLIENTS = 3
OUTAGE_SECONDS = 15


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Peak:
    """Samples a process's resident memory every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.05)

    def done(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


class Client:
    """One app process's producer, producing as fast as the sidecar lets it until told to stop."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        # Enough per client to overfill the sidecar (its own bounds must push back), small
        # enough that this test process does not measure its own memory instead.
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "queue.buffering.max.messages": 10_000}
        )
        self.topic = topic
        self.produced = self.acked = 0
        self.errors: list[str] = []
        self.left = -1
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors.append(str(err))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.producer.produce(self.topic, VALUE, on_delivery=self._on_delivery)
                self.produced += 1
            except BufferError:
                self.producer.poll(0.01)
        self.left = self.producer.flush(120)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=150)


def count_ids(bootstrap: str, topic: str, expected: int, timeout: float = 90) -> int:
    """Distinct ``kafka-sidecar-id`` headers in ``topic`` (payloads are not kept)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    ids: set[bytes] = set()  # b'' would be an event without the header: counted once
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            for message in batch:
                if message.error() is None:
                    headers = dict(message.headers() or [])
                    ids.add(bytes(headers.get("kafka-sidecar-id") or b""))
            if not batch and len(ids) >= expected:
                break
    finally:
        consumer.close()
    return len(ids)


def test_broker_outage_under_overload_stays_under_the_memory_limit_and_loses_nothing(
    kafka: KafkaCluster,
    start_sidecar: Callable[..., SidecarProcess],
    sidecar_env: Callable[[SidecarProcess], None],
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar(KAFKA_SIDECAR_MEMORY_LIMIT_BYTES=str(MEMORY_LIMIT))
    sidecar_env(sidecar)
    broker = kafka.nodes[0].process
    assert broker is not None
    assert broker.pid is not None
    peak = Peak(sidecar.pid)
    clients = [Client(kafka.bootstrap_servers, topic) for _ in range(CLIENTS)]
    try:
        time.sleep(3)
        os.kill(broker.pid, signal.SIGSTOP)  # the brokers stop answering; nothing is refused
        try:
            time.sleep(OUTAGE_SECONDS)
            during = sidecar.metrics()
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        time.sleep(5)
    finally:
        for client in clients:
            client.finish()
    peak_rss = peak.done()
    print(
        f"peak RSS {peak_rss / 2**20:.0f} MiB of {MEMORY_LIMIT / 2**20:.0f} MiB; "
        f"produced {sum(c.produced for c in clients)}"
    )
    assert peak_rss < MEMORY_LIMIT
    pushed_back = metric_sum(
        during, "kafka_sidecar_requests_total", code="RESOURCE_EXHAUSTED"
    ) + metric_sum(during, "kafka_sidecar_events_rejected_total", code="ERROR_CODE_BUFFER_FULL")
    assert pushed_back > 0
    for client in clients:
        assert client.left == 0
        assert client.errors == []
        assert client.acked == client.produced
        assert client.producer.emission_counters()[topic]["fallback"] == 0
    produced = sum(c.produced for c in clients)
    assert count_ids(kafka.bootstrap_servers, topic, produced) == produced
