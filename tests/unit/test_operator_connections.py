"""Connections saved: the sidecars' gauges read from a scrape, summed per policy, and shown."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from kafka_sidecar.metrics import SidecarMetrics
from kafka_sidecar_operator.conditions import Counts, build_status
from kafka_sidecar_operator.connections import (
    MAX_GAUGE,
    ConnectionCount,
    count_connections,
    sidecar_gauges,
)
from kafka_sidecar_operator.fallback import PodSample, client_totals
from kafka_sidecar_operator.kubectl_plugin import STATUS_HEADER, status_row
from kafka_sidecar_operator.policies import Policy

pytestmark = pytest.mark.unit


def policy() -> Policy:
    return Policy.from_body(
        {
            "metadata": {"namespace": "shop", "name": "orders", "generation": 2},
            "spec": {"sidecar": {"bootstrapServers": "k:9092"}, "rollout": {"percentage": 100}},
        }
    )


def test_the_gauges_are_read_from_what_the_sidecar_really_exports() -> None:
    """The sidecar's own registry: a renamed gauge there fails here, not in a cluster."""
    metrics = SidecarMetrics()
    metrics.clients.set(4)
    metrics.apply_statistics(
        '{"brokers": {"a:9092/1": {"state": "UP", "nodeid": 1},'
        ' "b:9092/2": {"state": "UP", "nodeid": 2},'
        ' "c:9092/3": {"state": "DOWN", "nodeid": 3},'
        ' "a:9092/bootstrap": {"state": "UP", "nodeid": -1}}}'
    )
    assert sidecar_gauges(generate_latest(metrics.registry).decode()) == (4, 2)


def test_missing_gauges_read_as_zero() -> None:
    assert sidecar_gauges('kafka_sidecar_client_events_total{outcome="attempts"} 3.0\n') == (0, 0)
    assert sidecar_gauges("") == (0, 0)


@pytest.mark.parametrize("value", ["-1.0", "NaN", "+Inf", str(float(MAX_GAUGE + 1)), "1e300"])
def test_a_value_no_sidecar_exports_is_refused(value: str) -> None:
    """The scraper counts a ValueError as a failed scrape; a hostile pod cannot overflow the
    status' integers or make the saving negative."""
    with pytest.raises(ValueError, match="not a sidecar's gauge"):
        sidecar_gauges(f"kafka_sidecar_broker_connections {value}\n")


def test_similar_names_are_not_the_gauges() -> None:
    text = "kafka_sidecar_clients_total 9.0\nkafka_sidecar_broker_connections_max 9.0\n"
    assert sidecar_gauges(text) == (0, 0)


def test_each_sidecar_multiplies_its_own_clients_by_its_own_connections() -> None:
    samples = [
        PodSample("a", clients=4, broker_connections=3),
        PodSample("b", clients=2, broker_connections=1),
        PodSample("c", reachable=False),  # not ready: nothing measured
    ]
    found = count_connections(samples)
    assert found == ConnectionCount(client_processes=6, through_sidecars=4, direct_estimate=14)
    assert found.saved == 10


def test_the_saving_is_never_negative() -> None:
    """One process per pod saves nothing; a sidecar with no client yet still holds its
    connections: the estimate is below the measured, and the saving is zero, not a loss."""
    found = count_connections(
        [
            PodSample("one", clients=1, broker_connections=3),
            PodSample("idle", clients=0, broker_connections=3),
        ]
    )
    assert (found.direct_estimate, found.through_sidecars, found.saved) == (3, 6, 0)
    assert count_connections([]).saved == 0


def test_the_status_carries_the_connection_fields() -> None:
    counts = Counts(matched=2, injected=2, pending=0, overlapping=())
    measured = count_connections([PodSample("a", clients=3, broker_connections=2)])
    status = build_status(policy(), counts, 0.0, "Ok", [], measured)
    assert {k: status[k] for k in measured.status_fields()} == {
        "clientProcesses": 3,
        "sidecarConnections": 2,
        "directConnectionsEstimate": 6,
        "connectionsSaved": 4,
    }
    unmeasured = build_status(policy(), counts, None, "Ok", [])
    assert unmeasured["connectionsSaved"] == 0
    assert unmeasured["sidecarConnections"] == 0


def test_the_plugin_shows_the_connections_after_the_alert() -> None:
    status: dict[str, Any] = {
        "actualPercentage": "100%",
        "injectedPods": 2,
        "matchedPods": 2,
        "fallbackRatio": "0.0%",
        "alertState": "Ok",
        "sidecarConnections": 2,
        "directConnectionsEstimate": 6,
        "connectionsSaved": 4,
    }
    row = dict(zip(STATUS_HEADER, status_row(policy(), status, 0), strict=True))
    assert (row["CONNECTIONS"], row["DIRECT(EST)"], row["SAVED"]) == ("2", "6", "4")
    assert row["ALERT"] == "Ok"
    before = dict(zip(STATUS_HEADER, status_row(policy(), {}, 0), strict=True))
    assert (before["CONNECTIONS"], before["SAVED"]) == ("-", "-")


def test_client_counters_that_are_not_finite_counts_are_refused() -> None:
    """A pod writes its own metrics: NaN or a negative count must fail the scrape, not the sum."""
    for value in ("NaN", "-Inf", "-3"):
        text = f'kafka_sidecar_client_events_total{{app="a",topic="t",outcome="attempts"}} {value}'
        with pytest.raises(ValueError, match="finite count"):
            client_totals(text)
