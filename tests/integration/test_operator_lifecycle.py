"""The operator over time: rollout at scale, fallback alerts from real endpoints, restarts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from kafka_sidecar.metrics import ClientCounters
from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from kafka_sidecar_localenv.processes import free_port
from tests.support import (
    create_policy,
    kubectl,
    pod_body,
    serve_registry,
    status_of,
    stop_serving,
    wait_for,
    wait_policy_active,
)

pytestmark = pytest.mark.integration


def owned_pod(owner: str, uid: str) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it: generateName, ownerReference, pod-template-hash."""
    body = pod_body("")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = f"{owner}-"
    body["metadata"]["labels"]["pod-template-hash"] = owner.rsplit("-", 1)[1]
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": owner,
            "uid": uid,
            "controller": True,
        }
    ]
    return body


def test_thousand_pods_at_30_percent_land_within_4_5_points(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace, rollout={"percentage": 30, "granularity": "pod"})
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace, expect=None)
    reasons: Counter[str] = Counter()
    for _ in range(1000):
        created = core.create_namespaced_pod(enabled_namespace, owned_pod("web-5d8f", "u-1"))
        reasons[status_of(created)["reason"]] += 1
    assert set(reasons) == {"injected", "outside-rollout"}
    assert abs(reasons["injected"] / 10 - 30) <= 4.5, reasons


def test_workload_granularity_keeps_each_deployment_all_in_or_all_out(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace, rollout={"percentage": 50})
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace, expect=None)
    by_workload: dict[str, set[bool]] = {}
    for n in range(40):
        for revision in ("aaaa", "bbbb"):  # two ReplicaSets of one Deployment
            for _ in range(2):
                pod = core.create_namespaced_pod(
                    enabled_namespace, owned_pod(f"app{n}-{revision}", f"u{n}{revision}")
                )
                by_workload.setdefault(f"app{n}", set()).add(
                    status_of(pod)["decision"] == "injected"
                )
    assert all(len(decisions) == 1 for decisions in by_workload.values())
    injected = sum(decisions == {True} for decisions in by_workload.values())
    assert 8 <= injected <= 32  # 40 workloads at 50%


class Endpoint:
    """A sidecar-like /metrics endpoint on its own loopback IP, exporting the real collector."""

    def __init__(self, host: str, port: int) -> None:
        self.counters = ClientCounters()
        registry = CollectorRegistry()
        registry.register(self.counters)
        self.attempts = self.fallback = 0
        self.server = serve_registry(registry, host, port)

    def emit(self, attempts: int, fallback: int) -> None:
        self.attempts += attempts
        self.fallback += fallback
        self.counters.update(
            "client-1",
            "web",
            "orders",
            (self.attempts, self.attempts - self.fallback, 0, self.fallback, 0),
        )

    def close(self) -> None:
        stop_serving(self.server)


@pytest.fixture
def endpoints() -> Iterator[list[Endpoint]]:
    port = free_port()
    made = [Endpoint(f"127.0.0.{n}", port) for n in (2, 3)]
    yield made
    for endpoint in made:
        endpoint.close()


def mark_running(core: k8s.CoreV1Api, namespace: str, name: str, ip: str, ready: bool) -> None:
    """What a kubelet would report: Running, the pod IP, the sidecar's readiness."""
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "initContainerStatuses": [
            {
                "name": "kafka-sidecar",
                "ready": ready,
                "restartCount": 0,
                "image": "i",
                "imageID": "",
                "started": True,
                "state": {"running": {}},
            }
        ],
    }
    core.patch_namespaced_pod_status(name, namespace, {"status": status})


def conditions(api: k8s.ApiClient, namespace: str, name: str = "p") -> dict[str, dict[str, Any]]:
    policy: Any = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "kafka-sidecar.io", "v1alpha1", namespace, "kafkasidecarpolicies", name
    )
    return {c["type"]: c for c in (policy.get("status") or {}).get("conditions", [])}


def test_fallback_alert_fires_with_an_event_pauses_injection_and_clears(
    api_client: k8s.ApiClient,
    control_plane: ControlPlane,
    enabled_namespace: str,
    endpoints: list[Endpoint],
) -> None:
    prometheus_rule_crd = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: prometheusrules, singular: prometheusrule, kind: PrometheusRule}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
    kubectl(control_plane, "apply", "-f", "-", stdin=prometheus_rule_crd)
    kubectl(
        control_plane,
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/prometheusrules.monitoring.coreos.com",
    )
    port = endpoints[0].server.server_address[1]
    create_policy(
        api_client,
        enabled_namespace,
        sidecar={"bootstrapServers": "127.0.0.1:9092", "metricsPort": port},
        fallback={
            "alert": {"maxRatio": 0.1, "window": "8s", "sustainedFor": "2s"},
            "autoPause": True,
        },
    )
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    for index, endpoint in enumerate(endpoints):
        name = f"web-{index}"
        core.create_namespaced_pod(enabled_namespace, pod_body(name))
        mark_running(core, enabled_namespace, name, f"127.0.0.{index + 2}", ready=True)
        endpoint.emit(1000, 0)

    wait_for(
        lambda: (
            conditions(api_client, enabled_namespace).get("FallbackAlert", {}).get("reason")
            == "FallbackRatioOk"
        ),
        what="a healthy FallbackAlert condition",
    )
    endpoints[0].emit(1000, 900)  # one pod sends most of its events around the sidecar
    fired = wait_for(
        lambda: (
            conditions(api_client, enabled_namespace)["FallbackAlert"]
            if conditions(api_client, enabled_namespace)["FallbackAlert"]["status"] == "True"
            else None
        ),
        timeout=30,
        what="FallbackAlert=True",
    )
    assert fired["reason"] == "FallbackRatioHigh"
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(enabled_namespace).items
            if e.reason == "FallbackAlert" and e.type == "Warning"
        ],
        what="a Warning FallbackAlert Event",
    )
    assert "went around the sidecar" in events[0].message
    wait_policy_active(core, enabled_namespace, expect="policy-paused")  # autoPause
    rule: Any = k8s.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", enabled_namespace, "prometheusrules", "kafka-sidecar-p"
    )
    assert rule["metadata"]["ownerReferences"][0]["kind"] == "KafkaSidecarPolicy"
    assert "kafka_sidecar_client_events_total" in rule["spec"]["groups"][0]["rules"][0]["expr"]

    for _ in range(12):  # recovery: only healthy traffic while the burst leaves the window
        for endpoint in endpoints:
            endpoint.emit(1000, 0)
        time.sleep(1)
    wait_for(
        lambda: conditions(api_client, enabled_namespace)["FallbackAlert"]["status"] == "False",
        timeout=30,
        what="FallbackAlert=False",
    )
    wait_policy_active(core, enabled_namespace, expect="injected")


def test_a_running_pod_whose_sidecar_is_not_ready_counts_as_in_fallback(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(
        api_client,
        enabled_namespace,
        fallback={"alert": {"maxRatio": 0.5, "window": "5s", "sustainedFor": "1s"}},
    )
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    core.create_namespaced_pod(enabled_namespace, pod_body("stuck"))
    mark_running(core, enabled_namespace, "stuck", "127.0.0.9", ready=False)
    wait_for(
        lambda: (
            conditions(api_client, enabled_namespace).get("FallbackAlert", {}).get("status")
            == "True"
        ),
        timeout=30,
        what="FallbackAlert=True for an unready sidecar",
    )


def test_pods_are_created_unmutated_and_fast_while_the_operator_is_down_and_status_recovers(
    api_client: k8s.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    enabled_namespace: str,
) -> None:
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    core.create_namespaced_pod(enabled_namespace, pod_body("before"))
    wait_for(
        lambda: (
            " 1 "
            in kubectl(control_plane, "get", "ksp", "-n", enabled_namespace).stdout.splitlines()[1]
        ),
        what="1 injected pod in the status",
    )
    operator.kill()
    try:
        started = time.monotonic()
        for n in range(5):
            core.create_namespaced_pod(enabled_namespace, pod_body(f"while-down-{n}"))
        elapsed = time.monotonic() - started
        assert elapsed < 3, f"5 pods took {elapsed:.1f}s with the webhook down"
        down = core.read_namespaced_pod("while-down-0", enabled_namespace)
        assert down.spec.init_containers is None
        assert status_of(down) == {}
    finally:
        operator.start()
    # Recomputed from the pods alone: 6 matched (5 admitted without a decision), 1 injected.
    row = wait_for(
        lambda: next(
            (
                line.split()
                for line in kubectl(
                    control_plane, "get", "ksp", "-n", enabled_namespace
                ).stdout.splitlines()[1:]
                if line.split()[2:4] == ["6", "1"]
            ),
            None,
        ),
        what="status recomputed after restart",
    )
    assert row[4] == "17%"
    assert conditions(api_client, enabled_namespace)["RolloutProgressing"]["reason"] == (
        "PodsAwaitingRecreation"
    )
