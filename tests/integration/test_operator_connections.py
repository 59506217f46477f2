"""Connections saved in a policy's status, from sidecar-like /metrics endpoints, against the real
kube-apiserver: the status fields, the SAVED column and ``kubectl kafka-sidecar status``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from kafka_sidecar.metrics import SidecarMetrics
from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.processes import free_port
from tests.integration.test_operator_lifecycle import mark_running
from tests.support import (
    create_policy,
    kubectl,
    pod_body,
    serve_registry,
    stop_serving,
    wait_for,
    wait_policy_active,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("clientProcesses", "sidecarConnections", "directConnectionsEstimate", "connectionsSaved")


class SidecarGauges:
    """A /metrics endpoint on its own loopback IP exporting the sidecar's real registry, whose
    client and broker-connection gauges the test sets."""

    def __init__(self, host: str, port: int) -> None:
        self.metrics = SidecarMetrics()
        self.server = serve_registry(self.metrics.registry, host, port)

    def set(self, clients: float, connections: float) -> None:
        self.metrics.clients.set(clients)
        self.metrics.broker_connections.set(connections)

    def close(self) -> None:
        stop_serving(self.server)


@pytest.fixture
def sidecars() -> Iterator[list[SidecarGauges]]:
    port = free_port()
    made = [SidecarGauges(f"127.0.0.{n}", port) for n in (7, 8)]
    yield made
    for endpoint in made:
        endpoint.close()


def connection_status(api: k8s.ApiClient, namespace: str) -> tuple[int, ...] | None:
    policy: Any = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "kafka-sidecar.io", "v1alpha1", namespace, "kafkasidecarpolicies", "orders"
    )
    status = policy.get("status") or {}
    if not all(name in status for name in FIELDS):
        return None
    return tuple(int(status[name]) for name in FIELDS)


def test_the_policy_status_shows_the_connections_its_sidecars_save(
    api_client: k8s.ApiClient,
    control_plane: ControlPlane,
    enabled_namespace: str,
    sidecars: list[SidecarGauges],
) -> None:
    port = sidecars[0].server.server_address[1]
    create_policy(
        api_client,
        enabled_namespace,
        name="orders",
        sidecar={"bootstrapServers": "127.0.0.1:9092", "metricsPort": port},
    )
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    sidecars[0].set(clients=4, connections=3)  # 4 processes, 3 brokers: 12 direct, 3 through
    sidecars[1].set(clients=2, connections=3)  # 2 processes: 6 direct, 3 through
    for index, sidecar in enumerate(sidecars):
        name = f"web-{index}"
        core.create_namespaced_pod(enabled_namespace, pod_body(name))
        mark_running(core, enabled_namespace, name, sidecar.server.server_address[0], ready=True)
    # A running pod whose sidecar is not ready serves nobody: it adds nothing.
    core.create_namespaced_pod(enabled_namespace, pod_body("stuck"))
    mark_running(core, enabled_namespace, "stuck", "127.0.0.10", ready=False)

    wait_for(
        lambda: connection_status(api_client, enabled_namespace) == (6, 6, 18, 12),
        timeout=30,
        what="status: 6 processes, 6 connections through sidecars, 18 direct (estimate), 12 saved",
    )
    listing = kubectl(control_plane, "get", "ksp", "-n", enabled_namespace).stdout
    header, row = listing.splitlines()[:2]
    assert row.split()[header.split().index("SAVED")] == "12"
    plugin = [
        str(ROOT / ".venv" / "bin" / "kubectl-kafka_sidecar"),
        f"--kubeconfig={control_plane.kubeconfig}",
    ]
    shown = subprocess.run(
        [*plugin, "status", "-n", enabled_namespace], capture_output=True, text=True, check=True
    ).stdout
    columns = dict(zip(*(line.split() for line in shown.splitlines()[:2]), strict=True))
    assert (columns["CONNECTIONS"], columns["DIRECT(EST)"], columns["SAVED"]) == ("6", "18", "12")

    # The gauges move, and the status follows at the next scrape: one process per pod saves
    # nothing, and a pod with fewer connections than processes is floored, not negative.
    sidecars[0].set(clients=1, connections=3)
    sidecars[1].set(clients=0, connections=3)
    wait_for(
        lambda: connection_status(api_client, enabled_namespace) == (1, 6, 3, 0),
        timeout=30,
        what="status: 1 process, 6 connections through sidecars, 3 direct (estimate), 0 saved",
    )

    # A gauge no honest sidecar exports leaves that pod out of the connection figures (its
    # fallback counters still count).
    sidecars[0].set(clients=5, connections=2)
    sidecars[1].set(clients=float("nan"), connections=3)
    wait_for(
        lambda: connection_status(api_client, enabled_namespace) == (5, 2, 10, 8),
        timeout=30,
        what="status from the honest sidecar alone",
    )
