"""The product's promise on real components: annotate, roll out, fewer connections, nothing lost.

Pods are created through the real API server as a ReplicaSet would, mutated by the real webhook,
and run as local processes (tests/… `run_pods`); events go to the real broker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from kafka_sidecar_localenv.connections import broker_connections, with_descendants
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.podrunner import LocalPod
from kafka_sidecar_localenv.sample_app import sample_app_pod
from tests.support import (
    consume_all,
    create_policy,
    create_topic,
    kubectl,
    status_of,
    wait_for,
    wait_policy_active,
)

pytestmark = pytest.mark.e2e
RunPods = Callable[..., list[LocalPod]]


def replica_pods(
    core: k8s.CoreV1Api,
    namespace: str,
    count: int,
    topic: str,
    bootstrap: str,
    owner: str = "orders-7f9c",
    workers: int = 3,
    rate: int = 150,
) -> list[str]:
    """Create pods as a ReplicaSet would (generateName, ownerReference, template hash)."""
    names = []
    for _ in range(count):
        body = sample_app_pod(owner, bootstrap, topic, workers, rate)
        names.append(str(core.create_namespaced_pod(namespace, body).metadata.name))
    return names


def app_reports(pod: LocalPod) -> list[dict[str, Any]]:
    """The JSON line each worker printed when it stopped."""
    log = (pod.workdir / "logs" / "app.log").read_text()
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def check_delivery(pods: list[LocalPod], bootstrap: str, topic: str) -> dict[str, int]:
    """Every acked event is in Kafka, in order per key, with no gap up to the last produced."""
    reports = [r for pod in pods for r in app_reports(pod)]
    assert len(reports) == sum(3 for _ in pods), "every worker reports at exit"
    assert all(r["failed"] == 0 and r["unflushed"] == 0 for r in reports), reports
    expected = sum(r["produced"] for r in reports)
    last: dict[str, int] = {k: v for r in reports for k, v in r["last"].items()}
    seen: dict[str, int] = {}
    duplicates = 0
    for message in consume_all(bootstrap, topic, expected, timeout=120):
        record = json.loads(message.value() or b"{}")
        key, seq = record["key"], record["seq"]
        if seq <= seen.get(key, -1):
            duplicates += 1
            continue
        assert seq == seen.get(key, -1) + 1, f"{key}: {seq} after {seen.get(key)}"
        seen[key] = seq
    assert seen == last, "some events never reached Kafka"
    return {"events": expected, "duplicates": duplicates}


def policy_and_topic(
    kafka: KafkaCluster,
    api: k8s.ApiClient,
    namespace: str,
    expect: str | None = "injected",
    **spec: Any,
) -> tuple[str, k8s.CoreV1Api]:
    """A fresh topic and the "orders" policy pointing at the broker, active in the webhook."""
    topic = create_topic(kafka, partitions=3)
    create_policy(
        api, namespace, name="orders", sidecar={"bootstrapServers": kafka.bootstrap_servers}, **spec
    )
    core = k8s.CoreV1Api(api)
    wait_policy_active(core, namespace, expect=expect)
    return topic, core


def connections(pod: LocalPod, kafka: KafkaCluster, which: str) -> int:
    return broker_connections(with_descendants(pod.pids(which)), [n.port for n in kafka.nodes])


def test_a_deployment_at_100_percent_sends_everything_through_its_sidecars(
    kafka: KafkaCluster,
    control_plane: ControlPlane,
    api_client: k8s.ApiClient,
    enabled_namespace: str,
    run_pods: RunPods,
) -> None:
    topic, core = policy_and_topic(kafka, api_client, enabled_namespace)
    names = replica_pods(core, enabled_namespace, 3, topic, kafka.bootstrap_servers)
    pods = run_pods(enabled_namespace, names)
    time.sleep(6)
    for pod in pods:
        assert connections(pod, kafka, "apps") == 0, "app processes must not talk to Kafka"
        assert connections(pod, kafka, "sidecars") >= 1
    row = wait_for(
        lambda: next(
            (
                line.split()
                for line in kubectl(
                    control_plane, "get", "ksp", "-n", enabled_namespace
                ).stdout.splitlines()[1:]
                if line.split()[2:5] == ["3", "3", "100%"]
            ),
            None,
        ),
        what="3 matched, 3 injected",
    )
    assert row[0] == "orders"
    for pod in pods:
        pod.stop()
    result = check_delivery(pods, kafka.bootstrap_servers, topic)
    assert result["duplicates"] == 0
    assert result["events"] > 1000


def test_half_the_pods_at_50_percent_and_both_paths_deliver_everything(
    kafka: KafkaCluster,
    api_client: k8s.ApiClient,
    enabled_namespace: str,
    run_pods: RunPods,
) -> None:
    topic, core = policy_and_topic(
        kafka,
        api_client,
        enabled_namespace,
        expect=None,
        rollout={"percentage": 50, "granularity": "pod"},
    )
    names: list[str] = []
    decisions: set[str] = set()
    while len(decisions) < 2 or len(names) < 4:  # keep creating until both kinds exist
        names += replica_pods(
            core, enabled_namespace, 1, topic, kafka.bootstrap_servers, workers=3, rate=100
        )
        decisions.add(status_of(core.read_namespaced_pod(names[-1], enabled_namespace))["reason"])
        assert len(names) < 20
    pods = run_pods(enabled_namespace, names)
    time.sleep(5)
    for pod in pods:
        injected = bool(pod.sidecars)
        direct = connections(pod, kafka, "apps")
        assert (direct == 0) if injected else (direct >= 3), (pod.name, injected, direct)
    for pod in pods:
        pod.stop()
    modes = {r["mode"] for pod in pods for r in app_reports(pod)}
    assert modes == {"sidecar", "direct"}
    check_delivery(pods, kafka.bootstrap_servers, topic)


def test_a_killed_sidecar_falls_back_without_loss_and_the_alert_fires_and_clears(
    kafka: KafkaCluster,
    api_client: k8s.ApiClient,
    enabled_namespace: str,
    run_pods: RunPods,
) -> None:
    topic, core = policy_and_topic(
        kafka,
        api_client,
        enabled_namespace,
        fallback={"alert": {"maxRatio": 0.1, "window": "10s", "sustainedFor": "2s"}},
    )
    pods = run_pods(
        enabled_namespace, replica_pods(core, enabled_namespace, 2, topic, kafka.bootstrap_servers)
    )
    custom = k8s.CustomObjectsApi(api_client)

    def alert() -> dict[str, Any]:
        body: Any = custom.get_namespaced_custom_object(
            "kafka-sidecar.io", "v1alpha1", enabled_namespace, "kafkasidecarpolicies", "orders"
        )
        found = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
        condition: dict[str, Any] = found.get("FallbackAlert", {})
        return condition

    wait_for(lambda: alert().get("reason") == "FallbackRatioOk", timeout=30, what="alert Ok")
    victim = pods[0]
    victim.kill_container("kafka-sidecar", hold=True)
    wait_for(lambda: alert().get("status") == "True", timeout=30, what="FallbackAlert=True")
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(enabled_namespace).items
            if e.reason == "FallbackAlert" and e.type == "Warning"
        ],
        what="a Warning Event",
    )
    assert events
    time.sleep(1)
    assert connections(victim, kafka, "apps") >= 1, "the pod's apps fell back to direct Kafka"
    victim.release("kafka-sidecar")
    wait_for(lambda: alert().get("status") == "False", timeout=60, what="the alert to clear")
    for pod in pods:
        pod.stop()
    check_delivery(pods, kafka.bootstrap_servers, topic)
