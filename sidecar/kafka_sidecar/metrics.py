"""The sidecar's Prometheus metrics (``kafka_sidecar_*``), on a registry of its own.

Per-event figures are counted in plain Python on the hot path and folded into Prometheus once
per producer poll: a Prometheus ``observe()`` per event would cost more than producing it.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kafka_sidecar_api.contract import CLIENT_OUTCOMES

# Label values clients choose (app, topic) are checked and capped: every distinct value is a
# Prometheus series, and a buggy or hostile client must not be able to grow them without bound.
TOPIC_LABEL = re.compile(r"[a-zA-Z0-9._-]{1,249}")  # Kafka's topic rule
APP_LABEL = re.compile(r"[a-zA-Z0-9._-]{1,253}")  # a DNS name, as the pod name it defaults to
MAX_TOPIC_LABELS = 1000
MAX_APP_LABELS = 100
MAX_TOPICS_PER_CLIENT = 1000
INVALID_LABEL = "_invalid"
OVERFLOW_LABEL = "_overflow"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(eq=False)
class LatencyHistogram(Collector):
    """Emit→broker-ack latency; ``observe_many`` costs a bisect per value, not a lock."""

    name: str
    documentation: str
    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds = self.counts, self.bounds
        total = 0.0
        with self.lock:
            for value in values:
                counts[bisect.bisect_left(bounds, value)] += 1
                total += value
            self.total += total

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            total = self.total
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


def _add(into: list[int], values: Iterable[int]) -> None:
    for index, value in enumerate(values):
        into[index] += value


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


Totals = tuple[int, int, int, int, int]


@dataclass(eq=False)
class LabelBudget:
    """Maps a client-chosen value to a label: itself while valid and among the first ``limit``
    distinct ones, ``_invalid`` or ``_overflow`` otherwise. A value keeps its label for good."""

    pattern: re.Pattern[str]
    limit: int
    seen: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, value: str) -> str:
        label = self.seen.get(value)
        if label is not None:
            return label
        with self.lock:
            if self.pattern.fullmatch(value) is None:
                return INVALID_LABEL  # not remembered: invalid values do not use the budget
            if len(self.seen) >= self.limit:
                return OVERFLOW_LABEL
            self.seen[value] = value
        return value


def topic_labels() -> LabelBudget:
    return LabelBudget(TOPIC_LABEL, MAX_TOPIC_LABELS)


@dataclass(eq=False)
class ClientCounters(Collector):
    """What client processes reported (cumulative per client), summed by app and topic.

    A forgotten client's totals are folded into ``retired``, so the sums never go backwards.
    Values are kept per client and reported topic and mapped to labels when summed, so topics
    sharing the overflow label add up instead of overwriting each other.
    """

    latest: dict[str, dict[tuple[str, str], Totals]] = field(default_factory=dict)
    retired: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    topic_label: LabelBudget = field(default_factory=topic_labels)
    app_label: LabelBudget = field(default_factory=lambda: LabelBudget(APP_LABEL, MAX_APP_LABELS))

    def update(self, client_id: str, app: str, topic: str, values: Totals) -> None:
        with self.lock:
            per_client = self.latest.setdefault(client_id, {})
            if (app, topic) in per_client or len(per_client) < MAX_TOPICS_PER_CLIENT:
                per_client[(app, topic)] = values

    def retire(self, client_id: str) -> None:
        with self.lock:
            for (app, topic), values in self.latest.pop(client_id, {}).items():
                key = (self.app_label(app), self.topic_label(topic))
                _add(self.retired.setdefault(key, [0, 0, 0, 0, 0]), values)

    def totals(self) -> dict[tuple[str, str], list[int]]:
        with self.lock:
            sums = {key: list(values) for key, values in self.retired.items()}
            for per_client in self.latest.values():
                for (app, topic), values in per_client.items():
                    key = (self.app_label(app), self.topic_label(topic))
                    _add(sums.setdefault(key, [0, 0, 0, 0, 0]), values)
        return sums

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "kafka_sidecar_client_events",
            "Events as counted by the pod's client processes (attempts, broker-acked, failed, "
            "sent through the direct fallback, re-sent after a failover), by app and topic",
            labels=["app", "topic", "outcome"],
        )
        for (app, topic), values in sorted(self.totals().items()):
            for outcome, value in zip(CLIENT_OUTCOMES, values, strict=True):
                family.add_metric([app, topic, outcome], value)
        yield family


class SidecarMetrics:
    """Every metric the sidecar exports; one instance per process (tests may make more)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kafka_sidecar_requests",
            "gRPC requests by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.accepted = Counter(
            "kafka_sidecar_events_accepted", "Events handed to the producer", ["topic"], registry=r
        )
        self.rejected = Counter(
            "kafka_sidecar_events_rejected",
            "Events refused before the producer, by error code",
            ["code"],
            registry=r,
        )
        self.acked = Counter(
            "kafka_sidecar_events_acked",
            "Events acknowledged by the brokers",
            ["topic"],
            registry=r,
        )
        self.failed = Counter(
            "kafka_sidecar_events_failed",
            "Events the brokers did not take, by error code",
            ["topic", "code"],
            registry=r,
        )
        self.emit_batch = Histogram(
            "kafka_sidecar_emit_batch_events",
            "Events per EmitBatch call",
            buckets=(1, 4, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.queue_depth = Gauge(
            "kafka_sidecar_queue_depth",
            "Events in the producer waiting for a broker ack",
            registry=r,
        )
        self.producer_batch_bytes = Gauge(
            "kafka_sidecar_producer_batch_size_bytes",
            "Average Kafka batch size over the last statistics window (librdkafka)",
            registry=r,
        )
        self.producer_batch_events = Gauge(
            "kafka_sidecar_producer_batch_events",
            "Average events per Kafka batch over the last statistics window (librdkafka)",
            registry=r,
        )
        self.broker_connections = Gauge(
            "kafka_sidecar_broker_connections",
            "Broker connections of the sidecar's producer that are up",
            registry=r,
        )
        self.broker_up = Gauge(
            "kafka_sidecar_broker_up",
            "1 while the producer's connection to this broker (node id) is up, 0 while it is down",
            ["broker"],
            registry=r,
        )
        self.reports_dropped = Counter(
            "kafka_sidecar_reports_dropped",
            "Delivery reports dropped because their client was forgotten without a reader",
            registry=r,
        )
        self.clients = Gauge(
            "kafka_sidecar_clients", "Client processes known to the sidecar", registry=r
        )
        self.frames_connections = Gauge(
            "kafka_sidecar_frames_connections",
            "Open connections on the frames socket (two per client process using it)",
            registry=r,
        )
        self.ready = Gauge("kafka_sidecar_ready", "1 once broker metadata was obtained", registry=r)
        self.latency = LatencyHistogram(
            "kafka_sidecar_delivery_latency_seconds",
            "Seconds from the sidecar accepting an event to the broker's ack",
        )
        # One budget for every metric labelled by topic, so they agree on the overflow.
        self.topic_label = topic_labels()
        self.client_counters = ClientCounters(topic_label=self.topic_label)
        r.register(self.latency)
        r.register(self.client_counters)

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))

    def apply_statistics(self, stats_json: str) -> None:
        """Fold one librdkafka statistics document into the batch and connection gauges."""
        stats = json.loads(stats_json)
        connections, batch_bytes, batch_events, weights = 0, 0.0, 0.0, 0
        for broker in stats.get("brokers", {}).values():
            node = broker.get("nodeid", -1)
            if isinstance(node, int) and node >= 0:
                up = broker.get("state") == "UP"
                connections += up
                # Bounded: one series per broker of the cluster, never per bootstrap address.
                self.broker_up.labels(str(node)).set(1 if up else 0)
            size = broker.get("batchsize", {})
            count = broker.get("batchcnt", {})
            samples = int(size.get("cnt", 0))
            if samples:
                batch_bytes += float(size.get("avg", 0)) * samples
                batch_events += float(count.get("avg", 0)) * samples
                weights += samples
        self.broker_connections.set(connections)
        if weights:
            self.producer_batch_bytes.set(batch_bytes / weights)
            self.producer_batch_events.set(batch_events / weights)
