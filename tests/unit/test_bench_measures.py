"""The benchmarks' arithmetic: how broker JMX readings and a load sweep become the figures."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fleet import broker_side, knee_of
from kafka_sidecar_localenv.broker_metrics import READS, BrokerSample, parse

pytestmark = pytest.mark.unit


def test_a_bulk_read_sums_every_mbean_a_pattern_matches_and_counts_failed_reads_as_zero() -> None:
    answers: list[dict[str, Any]] = [
        {"status": 200, "value": {"a,version=9": {"Count": 2}, "a,version=10": {"Count": 5}}},
        {"status": 200, "value": 1000},
        {"status": 404, "error": "no such MBean"},
        {
            "status": 200,
            "value": {"p0": {"connection-count": 3.0}, "p1": {"connection-count": 1.0}},
        },
        {"status": 200, "value": {"init": 1, "used": 64, "committed": 128, "max": 512}},
        {"status": 200, "value": {"young": {"CollectionTime": 7}, "old": {"CollectionTime": 0}}},
        {"status": 200, "value": 2_000_000_000},
    ]
    assert len(answers) == len(READS)
    assert parse(answers) == BrokerSample(
        produce_requests=7,
        bytes_in=1000,
        records_in=0,
        connections=4,
        heap_bytes=64,
        gc_ms=7,
        cpu_ns=2e9,
    )


def test_broker_side_figures_are_differences_per_second_and_per_event() -> None:
    before = BrokerSample(produce_requests=10, bytes_in=1000, records_in=100, cpu_ns=1e9)
    after = BrokerSample(produce_requests=110, bytes_in=51_000, records_in=10_100, cpu_ns=3e9)
    figures = broker_side(
        before, after, BrokerSample(connections=5), BrokerSample(), 10_000, 100, 2
    )
    assert figures["broker_produce_requests_per_s"] == 50
    assert figures["broker_records_per_request"] == 100
    assert figures["broker_payload_per_byte_in"] == 20
    assert figures["broker_cpu_s_per_m"] == 200
    assert figures["broker_side_connections"] == 5


def row(rate: float, p99: float, delivered: float = 1.0) -> dict[str, Any]:
    return {"offered_per_second": rate, "p99_ms": p99, "delivered_ratio": delivered}


def test_the_knee_is_the_first_load_whose_p99_passes_twice_the_lowest_loads() -> None:
    assert knee_of([row(4000, 19), row(1000, 10), row(2000, 21), row(8000, 50)]) == 2000
    assert knee_of([row(1000, 10), row(2000, 19), row(4000, 5, delivered=0.99)]) == 4000
    assert knee_of([row(1000, 10), row(2000, 19)]) is None
