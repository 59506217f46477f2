"""Connections saved, measured on the real node: the policy's status against the TCP connections
the sidecars hold to the broker, read from the sidecars' own /proc (what ``ss -p`` would show)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client as k8s

from kafka_sidecar_localenv.connections import broker_connections, container_pids
from kafka_sidecar_localenv.node import RealNode
from tests.e2e.conftest import kubectl_ok
from tests.e2e.test_real_node import (
    SIDECAR,
    broker_ports,
    container_id,
    deploy_orders,
    policy_for,
)

pytestmark = pytest.mark.e2e
FIELDS = ("clientProcesses", "sidecarConnections", "directConnectionsEstimate", "connectionsSaved")


def policy_status(api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    body: Any = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "kafka-sidecar.io", "v1alpha1", namespace, "kafkasidecarpolicies", "orders"
    )
    status: dict[str, Any] = body.get("status") or {}
    return status


def test_the_policy_status_counts_the_sidecars_broker_connections_and_a_saving(
    installed_operator: RealNode, node_api: k8s.ApiClient, app_namespace: str
) -> None:
    node = installed_operator
    assert node.kafka is not None
    topic = policy_for(node, node_api, app_namespace)  # 100%: every pod gets its sidecar
    workers = 3
    pods = deploy_orders(node, node_api, app_namespace, topic, workers=workers, rate=50)
    ports = broker_ports(node)
    sidecars = [pid for pod in pods for pid in container_pids(container_id(pod, SIDECAR))]
    apps = [pid for pod in pods for pid in container_pids(container_id(pod, "app"))]
    assert sidecars
    assert apps
    # The gauge counts brokers librdkafka has UP by node id; a bootstrap connection it may
    # still hold is a TCP connection to a broker port too, at most one per bootstrap address.
    bootstrap = len(node.kafka.bootstrap_servers.split(","))

    def agrees(status: dict[str, Any], at_brokers: int) -> bool:
        if not all(isinstance(status.get(k), int) for k in FIELDS):
            return False  # not scraped yet
        through: int = status["sidecarConnections"]
        served: bool = status["clientProcesses"] >= workers * len(pods)
        return served and len(pods) <= through <= at_brokers <= through + bootstrap * len(pods)

    seen: list[tuple[dict[str, Any], int]] = []
    deadline = time.monotonic() + 120  # sidecar statistics every 5 s, operator scrape every 15 s
    while True:
        status = policy_status(node_api, app_namespace)
        at_brokers = broker_connections(sidecars, ports)
        seen.append(({k: status.get(k) for k in FIELDS}, at_brokers))
        if agrees(status, at_brokers):
            break
        assert time.monotonic() < deadline, (
            "the status never agreed with the connections counted at the broker; "
            f"(status, counted) last seen: {seen[-3:]}"
        )
        time.sleep(2)
    print(f"connections (status, counted at the broker): {seen[-1]}")
    assert broker_connections(apps, ports) == 0, "the apps' processes hold no broker connection"
    assert status["connectionsSaved"] > 0
    assert (
        status["directConnectionsEstimate"]
        == status["sidecarConnections"] + status["connectionsSaved"]
    )
    listing = kubectl_ok(node, "get", "ksp", "orders", "-n", app_namespace).splitlines()
    header, row = listing[0].split(), listing[1].split()
    assert int(row[header.index("SAVED")]) > 0

    kubectl_ok(node, "delete", "deployment", "orders", "-n", app_namespace, "--wait=true")
