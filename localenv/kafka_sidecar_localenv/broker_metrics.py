"""The brokers' own metrics (JMX, served over HTTP by the Jolokia agent each broker runs with).

What the sidecar changes on the broker side is read from the brokers themselves: connections,
Produce requests, bytes and records in, heap and GC, and the broker process's CPU. Counters are
cumulative; a benchmark takes a sample before and after and divides the difference.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

# (name, MBean pattern, attribute): every counter summed over the MBeans a pattern matches.
READS: tuple[tuple[str, str, str], ...] = (
    (
        "produce_requests",
        "kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,*",
        "Count",
    ),
    ("bytes_in", "kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec", "Count"),
    ("records_in", "kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec", "Count"),
    (
        "connections",
        "kafka.server:type=socket-server-metrics,listener=PLAINTEXT,*",
        "connection-count",
    ),
    ("heap_bytes", "java.lang:type=Memory", "HeapMemoryUsage"),
    ("gc_ms", "java.lang:type=GarbageCollector,*", "CollectionTime"),
    ("cpu_ns", "java.lang:type=OperatingSystem", "ProcessCpuTime"),
)


@dataclass(frozen=True)
class BrokerSample:
    """One reading of one broker, or the sum over several."""

    produce_requests: float = 0.0
    bytes_in: float = 0.0
    records_in: float = 0.0
    connections: float = 0.0
    heap_bytes: float = 0.0
    gc_ms: float = 0.0
    cpu_ns: float = 0.0

    def __add__(self, other: BrokerSample) -> BrokerSample:
        return BrokerSample(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


def total(value: Any) -> float:
    """A Jolokia value as one number: pattern reads map MBean → {attribute: value}; composite
    values (HeapMemoryUsage) count their ``used`` part."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        if "used" in value:
            return total(value["used"])
        return sum(total(inner) for inner in value.values())
    return 0.0


def parse(responses: Iterable[dict[str, Any]]) -> BrokerSample:
    """A bulk read's answers (in ``READS`` order) → a sample; a failed read counts as 0."""
    values = {}
    for (name, _, _), answer in zip(READS, responses, strict=True):
        values[name] = total(answer.get("value")) if answer.get("status") == 200 else 0.0
    return BrokerSample(**values)


def read(port: int, timeout: float = 30.0) -> BrokerSample:
    """One broker's sample, from its Jolokia agent on 127.0.0.1:``port``."""
    body = json.dumps(
        [{"type": "read", "mbean": mbean, "attribute": attribute} for _, mbean, attribute in READS]
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/jolokia/",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our agent
        answers: list[dict[str, Any]] = json.loads(response.read())
    return parse(answers)


def read_all(ports: Iterable[int], timeout: float = 30.0) -> BrokerSample:
    """The cluster's sum over every broker (a broker saturated by the load under test may take
    seconds to answer: the default waits for it)."""
    sample = BrokerSample()
    for port in ports:
        sample = sample + read(port, timeout)
    return sample
