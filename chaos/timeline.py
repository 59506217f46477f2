"""One sample a second while a fault runs: events/s into the topic, the fallback ratio the sidecars
see, broker connections counted by the kernel, and each broker's state as the sidecars report it.

The fault's own marks (when it started, when it was undone) go on the same clock, so the report's
chart shows cause and effect together.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from chaos.fleet import SIDECAR, Background, Fleet, container_pids
from kafka_sidecar_localenv.connections import broker_connections
from kafka_sidecar_operator.fallback import client_totals

METRICS_PORT = 9464


@dataclass
class Sample:
    """One second of the run; ``None`` where nothing could be read."""

    at: float
    events_per_second: float
    fallback_ratio: float | None
    broker_connections: int
    brokers_down: int  # brokers some sidecar reports down (kafka_sidecar_broker_up == 0)
    sidecars_answering: int


@dataclass
class Mark:
    """A fault's window on the run's clock (``end`` is None while it lasts)."""

    label: str
    start: float
    end: float | None = None


def scrape(pod: Any) -> str | None:
    """The sidecar's metrics page, or None while it does not answer."""
    if not pod.status.pod_ip:
        return None
    url = f"http://{pod.status.pod_ip}:{METRICS_PORT}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return str(response.read(4 << 20).decode())
    except OSError:
        return None


def broker_states(text: str) -> dict[str, float]:
    """``kafka_sidecar_broker_up`` per broker id, from one metrics page."""
    states: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kafka_sidecar_broker_up{"):
            labels, value = line.rsplit(" ", 1)
            broker = labels.split('broker="', 1)[1].split('"', 1)[0]
            states[broker] = float(value)
    return states


@dataclass
class Timeline:
    """Samples ``fleet`` every second on a thread until stopped."""

    fleet: Fleet
    broker_ports: list[int]
    samples: list[Sample] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    # Per broker id: the seconds (run clock) at which some sidecar reported it down.
    down_seen: dict[str, list[float]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _sampler: Background | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> Timeline:
        self._sampler = Background(self._run).start()
        return self

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()

    def mark(self, label: str) -> Mark:
        found = Mark(label, self.now())
        self.marks.append(found)
        return found

    def end(self, mark: Mark) -> None:
        mark.end = self.now()

    def _run(self, stopping: threading.Event) -> None:
        consumer = Consumer(
            {"bootstrap.servers": self.fleet.bootstrap, "group.id": "chaos-tl", "log_level": 0}
        )
        try:
            last_offset, last_at = self._offset(consumer), self.now()
            last_totals: tuple[float, float] | None = None
            while not stopping.wait(1.0):
                with contextlib.suppress(Exception):  # a sample missed is not a run failed
                    offset, at = self._offset(consumer), self.now()
                    totals, sample = self._sample(at)
                    sample.events_per_second = (offset - last_offset) / max(at - last_at, 1e-3)
                    if last_totals is not None and totals is not None:
                        attempts = totals[0] - last_totals[0]
                        fallback = totals[1] - last_totals[1]
                        if attempts > 0 and fallback >= 0:
                            sample.fallback_ratio = fallback / attempts
                    self.samples.append(sample)
                    last_offset, last_at, last_totals = offset, at, totals
        finally:
            consumer.close()

    def _offset(self, consumer: Consumer) -> int:
        metadata = consumer.list_topics(self.fleet.topic, timeout=5)
        return sum(
            consumer.get_watermark_offsets(TopicPartition(self.fleet.topic, p), timeout=5)[1]
            for p in metadata.topics[self.fleet.topic].partitions
        )

    def _sample(self, at: float) -> tuple[tuple[float, float] | None, Sample]:
        pods = self.fleet.pods()
        pids: list[int] = []
        attempts = fallback = 0.0
        answering = 0
        down: set[str] = set()
        for pod in pods:
            pids += container_pids(pod, "app") + container_pids(pod, SIDECAR)
            text = scrape(pod)
            if text is None:
                continue
            answering += 1
            pod_attempts, pod_fallback = client_totals(text)
            attempts, fallback = attempts + pod_attempts, fallback + pod_fallback
            down |= {b for b, up in broker_states(text).items() if up == 0}
        for broker in down:
            self.down_seen.setdefault(broker, []).append(at)
        connections = broker_connections(pids, self.broker_ports)
        sample = Sample(at, 0.0, None, connections, len(down), answering)
        return ((attempts, fallback) if answering == len(pods) else None), sample

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``check`` until it holds; returns the run-clock second it did."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):  # a broker or API server still restarting
                if check():
                    return self.now()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.5)
