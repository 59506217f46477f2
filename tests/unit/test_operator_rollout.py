"""Rollout buckets, status counting and the fallback alert's state machine."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from cryptography import x509

from kafka_sidecar_operator import tls
from kafka_sidecar_operator.conditions import PodView, build_status, count
from kafka_sidecar_operator.fallback import (
    FallbackTracker,
    PodSample,
    client_totals,
    parse_duration,
)
from kafka_sidecar_operator.policies import Policy, selector_matches
from kafka_sidecar_operator.rollout import bucket, selected, workload_identity

pytestmark = pytest.mark.unit


def test_buckets_are_stable_and_spread_evenly() -> None:
    assert bucket("ns/p", "Deployment/web") == bucket("ns/p", "Deployment/web")
    values = [bucket("ns/p", f"pod-{n}") for n in range(10_000)]
    share = sum(selected(v, 30) for v in values) / len(values)
    assert abs(share - 0.30) < 0.02


def test_raising_the_percentage_only_adds_pods() -> None:
    values = [bucket("ns/p", f"pod-{n}") for n in range(2000)]
    for low, high in ((10, 30), (30, 50), (50, 100)):
        assert all(selected(v, high) for v in values if selected(v, low))


def test_a_deployment_keeps_its_identity_across_replicasets() -> None:
    def pod(rs: str, template_hash: str) -> dict[str, Any]:
        return {
            "metadata": {
                "labels": {"pod-template-hash": template_hash},
                "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": True}],
            }
        }

    assert workload_identity(pod("web-7d9f", "7d9f")) == "Deployment/web"
    assert workload_identity(pod("web-55aa", "55aa")) == "Deployment/web"
    statefulset = {
        "metadata": {"ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]}
    }
    assert workload_identity(statefulset) == "StatefulSet/db"
    assert workload_identity({"metadata": {}}) is None


def test_selectors_follow_kubernetes_semantics() -> None:
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}}, labels)
    assert selector_matches(
        {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        },
        labels,
    )
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels
    )


def view(
    name: str,
    injected: bool,
    bucket_value: float | None,
    policy: str = "ns/p",
    labels: dict[str, str] | None = None,
) -> PodView:
    status: dict[str, Any] = {"decision": "injected" if injected else "skipped", "policy": policy}
    if bucket_value is not None:
        status["bucket"] = bucket_value
    body = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": labels or {"app": "web"},
            "annotations": {
                "kafka-sidecar.io/inject": "true",
                "kafka-sidecar.io/status": json.dumps(status),
            },
        },
        "spec": {
            "containers": [{"name": "app"}],
            "initContainers": [{"name": "kafka-sidecar"}] if injected else [],
        },
    }
    return PodView.from_body(body)


def make_policy(percentage: int, name: str = "p", created: str = "2026-01-01") -> Policy:
    return Policy.from_body(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "creationTimestamp": created,
                "generation": 3,
            },
            "spec": {"rollout": {"percentage": percentage}, "sidecar": {"bootstrapServers": "k:1"}},
        }
    )


def test_status_counts_matched_injected_and_pods_awaiting_recreation() -> None:
    policy = make_policy(50)
    pods = [
        view("a", True, 10.0),
        view("b", False, 70.0),
        view("c", False, 20.0),
        view("d", False, None),
    ]
    counts = count(policy, [policy], pods)
    assert (counts.matched, counts.injected, counts.pending) == (4, 1, 2)
    status = build_status(policy, counts, 0.0, "Ok", [])
    assert status["actualPercentage"] == "25%"
    assert status["observedGeneration"] == 3
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["RolloutProgressing"]["reason"] == "PodsAwaitingRecreation"
    assert conditions["FallbackAlert"]["status"] == "False"


def test_overlap_is_reported_and_each_pod_counted_once() -> None:
    old, new = make_policy(100, "old", "2026-01-01"), make_policy(100, "new", "2026-02-01")
    pods = [view("a", True, 1.0, policy="ns/old")]
    assert count(old, [old, new], pods).matched == 1
    assert count(new, [old, new], pods).matched == 0
    status = build_status(new, count(new, [old, new], pods), None, "Ok", [])
    assert {c["type"] for c in status["conditions"]} >= {"Overlapping"}


def test_condition_transition_time_moves_only_on_a_flip() -> None:
    policy = make_policy(100)
    counts = count(policy, [policy], [])
    first = build_status(policy, counts, 0.0, "Ok", [])["conditions"]
    stale = [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first]
    again = {c["type"]: c for c in build_status(policy, counts, 0.0, "Ok", stale)["conditions"]}
    assert again["Ready"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = {
        c["type"]: c for c in build_status(policy, counts, 0.5, "Firing", stale)["conditions"]
    }
    assert flipped["FallbackAlert"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_fallback_alert_fires_only_when_sustained_and_clears_on_recovery() -> None:
    tracker = FallbackTracker()
    window, limit, sustained = 60.0, 0.1, 10.0

    def at(t: float, attempts: float, fallback: float, reachable: bool = True) -> str:
        return tracker.observe(
            t,
            [PodSample("a", attempts, fallback, reachable), PodSample("b", attempts, 0)],
            window,
            limit,
            sustained,
        )

    assert at(0, 0, 0) == "Ok"
    assert at(5, 100, 50) == "Pending"  # 50 of 200 events
    assert tracker.ratio == pytest.approx(0.25)
    assert at(16, 200, 100) == "Firing"
    assert at(80, 10_000, 100) == "Ok"  # the burst left the window


def test_a_running_pod_with_an_unready_sidecar_counts_as_in_fallback() -> None:
    tracker = FallbackTracker()
    tracker.observe(0, [PodSample("a", reachable=False), PodSample("b", 10, 0)], 60, 0.1, 0)
    assert tracker.ratio == pytest.approx(0.5)
    assert tracker.state == "Firing"


def test_metrics_text_and_durations_are_parsed() -> None:
    text = "\n".join(
        [
            "# TYPE kafka_sidecar_client_events counter",
            'kafka_sidecar_client_events_total{app="a",outcome="attempts",topic="t"} 90.0',
            'kafka_sidecar_client_events_total{app="a",outcome="fallback",topic="t"} 9.0',
            'kafka_sidecar_client_events_total{app="b",outcome="attempts",topic="u"} 10.0',
        ]
    )
    assert client_totals(text) == (100.0, 9.0)
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45


def test_self_managed_certificate_is_renewed_with_a_third_of_its_life_left() -> None:
    issued = tls.issue("kafka-sidecar-system")
    cert = x509.load_pem_x509_certificate(issued["tls.crt"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kafka-sidecar-webhook.kafka-sidecar-system.svc" in names.get_values_for_type(
        x509.DNSName
    )
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert not tls.needs_renewal(issued["tls.crt"], start + (end - start) / 2)
    assert tls.needs_renewal(issued["tls.crt"], end - (end - start) / 4)
    assert tls.needs_renewal(issued["tls.crt"], end + datetime.timedelta(days=1))
