"""What clients cannot do to the sidecar's metrics endpoint: grow series or hold connections."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kafka_sidecar import metrics
from kafka_sidecar.endpoints import start_http
from kafka_sidecar.metrics import APP_LABEL, ClientCounters, LabelBudget, SidecarMetrics

pytestmark = pytest.mark.unit


def test_label_values_are_validated_and_capped_with_an_overflow_label() -> None:
    budget = LabelBudget(APP_LABEL, limit=2)
    assert budget("web") == "web"
    assert budget("bad label{}") == "_invalid"
    assert budget("") == "_invalid"
    assert budget("api") == "api"
    assert budget("third") == "_overflow"
    assert budget("web") == "web"  # a value keeps its label


def test_topics_beyond_the_cap_add_up_under_the_overflow_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "MAX_TOPIC_LABELS", 1)
    counters = ClientCounters(topic_label=metrics.topic_labels())
    counters.update("c1", "web", "a", (1, 1, 0, 0, 0))
    counters.update("c1", "web", "b", (2, 2, 0, 0, 0))
    counters.update("c1", "web", "c", (3, 3, 0, 0, 0))
    counters.update("c1", "web", "c", (4, 4, 0, 0, 0))  # cumulative: replaces c's 3
    assert counters.totals() == {
        ("web", "a"): [1, 1, 0, 0, 0],
        ("web", "_overflow"): [6, 6, 0, 0, 0],
    }


def test_one_client_cannot_report_unbounded_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_TOPICS_PER_CLIENT", 3)
    counters = ClientCounters()
    for n in range(10):
        counters.update("c1", "web", f"t{n}", (1, 0, 0, 0, 0))
    assert len(counters.latest["c1"]) == 3


def test_every_topic_labelled_metric_shares_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_TOPIC_LABELS", 2)
    sidecar_metrics = SidecarMetrics()
    assert sidecar_metrics.client_counters.topic_label is sidecar_metrics.topic_label
    for topic in ("a", "b", "c", "d"):
        sidecar_metrics.accepted.labels(sidecar_metrics.topic_label(topic)).inc()
    text = generate_latest(sidecar_metrics.registry).decode()
    labelled = [
        line for line in text.splitlines() if line.startswith("kafka_sidecar_events_accepted_total")
    ]
    assert len(labelled) == 3
    assert 'kafka_sidecar_events_accepted_total{topic="_overflow"} 2.0' in labelled


@pytest.fixture
def endpoint() -> Iterator[int]:
    server = start_http("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: True, 0.3)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_connection_that_sends_nothing_is_closed_after_the_request_timeout(
    endpoint: int,
) -> None:
    with socket.create_connection(("127.0.0.1", endpoint), timeout=5) as idle:
        started = time.monotonic()
        assert idle.recv(1024) == b""  # closed by the server, not by our 5 s timeout
        assert time.monotonic() - started < 3
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint}/healthz", timeout=5) as answer:
        assert answer.status == 200


def test_a_lost_broker_and_its_recovery_show_per_broker_from_the_statistics() -> None:
    """The chaos suite reads a broker's loss here; bootstrap entries (node id -1) add no series."""
    sidecar = SidecarMetrics()

    def stats(second: str) -> str:
        brokers = {
            "b1": {"nodeid": 1, "state": "UP"},
            "b2": {"nodeid": 2, "state": second},
            "bootstrap": {"nodeid": -1, "state": "UP"},
        }
        return json.dumps({"brokers": brokers})

    def up(broker: str) -> float | None:
        return sidecar.registry.get_sample_value("kafka_sidecar_broker_up", {"broker": broker})

    sidecar.apply_statistics(stats("UP"))
    assert (up("1"), up("2"), up("-1")) == (1.0, 1.0, None)
    assert sidecar.registry.get_sample_value("kafka_sidecar_broker_connections") == 2
    sidecar.apply_statistics(stats("CONNECT"))
    assert (up("1"), up("2")) == (1.0, 0.0)
    assert sidecar.registry.get_sample_value("kafka_sidecar_broker_connections") == 1
    sidecar.apply_statistics(stats("UP"))
    assert up("2") == 1.0
