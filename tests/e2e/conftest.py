"""The real node for end-to-end tests: a kubelet runs the project's own images.

One cluster per session (control plane, controller-manager, scheduler, kubelet, kube-proxy,
containerd, one Kafka broker on the node's address). The operator is installed the way the README
tells users: ``kubectl apply -k manifests/crd`` then ``manifests/selfsigned``, two replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kafka_sidecar_localenv.node import RealNode, host_snapshot
from kafka_sidecar_localenv.operator_install import install_operator
from kafka_sidecar_localenv.podlogs import FollowedLog
from kafka_sidecar_localenv.processes import ComponentError
from kafka_sidecar_localenv.versions import CacheLayout
from tests.conftest import SERVER_LOGS
from tests.support import unique_name, wait_for

OPERATOR_NAMESPACE = "kafka-sidecar-system"


@pytest.fixture(scope="session")
def real_node(layout: CacheLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """The whole single-node cluster; stopped at the end of the session, which fails unless the
    host is as it was (links, sysctls, iptables chains, network namespaces, cgroups, mounts)."""
    before = host_snapshot()
    node = RealNode(layout, tmp_path_factory.mktemp("node"))
    try:
        node.start()
        SERVER_LOGS.update({f"node/{name}": path for name, path in node.logs().items()})
        yield node
    finally:
        node.stop()
    after = host_snapshot()
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, f"the node left host changes behind: {changed}"


@pytest.fixture(scope="session")
def node_api(real_node: RealNode) -> Iterator[k8s.ApiClient]:
    client = k8s_config.new_client_from_config(config_file=str(real_node.kubeconfig))
    with client:
        yield client


def kubectl_ok(node: RealNode, *args: str, timeout: float = 180) -> str:
    proc = node.kubectl(*args, timeout=timeout)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def installed_operator(real_node: RealNode) -> RealNode:
    """The README's install path: CRDs, then the self-managed TLS overlay; both replicas Ready."""
    try:
        install_operator(real_node.kubectl_argv())
    except ComponentError as error:
        pods = real_node.kubectl("get", "pods", "-A", "-o", "wide").stdout
        logs = real_node.kubectl(
            "logs", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=kafka-sidecar-operator",
            "--tail=40", "--all-containers",
        ).stdout  # fmt: skip
        pytest.fail(f"the operator never became Ready:\n{error}\n{pods}\n{logs}")
    return real_node


@pytest.fixture
def app_namespace(installed_operator: RealNode, node_api: k8s.ApiClient) -> Iterator[str]:
    """A namespace enabled for injection that enforces the restricted Pod Security Standard."""
    core = k8s.CoreV1Api(node_api)
    name = unique_name("e2e")
    core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {
                    "kafka-sidecar.io/injection": "enabled",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            }
        }
    )
    yield name
    core.delete_namespace(name)
    wait_for(
        lambda: name not in {n.metadata.name for n in core.list_namespace().items},
        timeout=120,
        what=f"namespace {name} deleted",
    )


@pytest.fixture
def follow_apps(real_node: RealNode) -> Iterator[Callable[[str, list[Any]], list[FollowedLog]]]:
    """Follow the app container's log of each pod; every follower is stopped after the test,
    also when it failed before reading them."""
    started: list[FollowedLog] = []

    def follow(namespace: str, pods: list[Any]) -> list[FollowedLog]:
        logs = [
            FollowedLog(real_node.kubectl_argv(), namespace, p.metadata.name).start() for p in pods
        ]
        started.extend(logs)
        return logs

    yield follow
    for log in started:
        log.stop()


def running_pods(core: k8s.CoreV1Api, namespace: str, selector: str, count: int) -> list[Any]:
    """Wait until ``count`` pods matching ``selector`` run with every container ready."""

    def ready() -> list[Any] | None:
        pods = [
            p
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
            if p.metadata.deletion_timestamp is None
        ]
        good = [
            p
            for p in pods
            if p.status.phase == "Running"
            and all(c.ready for c in (p.status.container_statuses or []))
        ]
        return good if len(good) == count and len(pods) == count else None

    found: list[Any] = wait_for(ready, timeout=180, what=f"{count} ready pods ({selector})")
    time.sleep(0.5)
    return found
