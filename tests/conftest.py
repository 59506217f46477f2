"""Session fixtures that own the real servers: a Kafka cluster and a Kubernetes control plane.

Integration and e2e tests fail (never skip) when a component cannot start. A failing test's
report carries the tails of the server logs, and the session fails if anything it started is
still running at the end.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kafka_sidecar_localenv import processes
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from kafka_sidecar_localenv.sidecar import SidecarProcess
from kafka_sidecar_localenv.versions import CacheLayout, default_layout
from tests.support import create_topic, unique_name, wait_for

# name -> log file of every server this session started; tails go into failing reports.
SERVER_LOGS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def layout() -> CacheLayout:
    return default_layout()


def _start_kafka(layout: CacheLayout, workdir: Path, size: int) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(layout, workdir, size=size)
    try:
        cluster.start()
        SERVER_LOGS.update({f"{name}@{size}": path for name, path in cluster.logs().items()})
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka(layout: CacheLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A one-node Kafka cluster for the whole session."""
    yield from _start_kafka(layout, tmp_path_factory.mktemp("kafka"), size=1)


@pytest.fixture(scope="session")
def kafka3(layout: CacheLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A three-node Kafka cluster (replication factor 3, min.insync.replicas 2)."""
    yield from _start_kafka(layout, tmp_path_factory.mktemp("kafka3"), size=3)


@pytest.fixture(scope="session")
def control_plane(
    layout: CacheLayout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with RBAC and an admin kubeconfig."""
    plane = ControlPlane(layout, tmp_path_factory.mktemp("kubernetes"))
    try:
        plane.start()
        SERVER_LOGS.update(plane.logs())
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    """A Kubernetes API client logged in as the admin user of the control plane."""
    client = k8s_config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    with client:
        yield client


@pytest.fixture
def topic(kafka: KafkaCluster) -> str:
    """A fresh one-partition topic on the one-node cluster."""
    return create_topic(kafka)


@pytest.fixture
def namespace(api_client: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted after the test."""
    core = k8s.CoreV1Api(api_client)
    name = unique_name("ns")
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    # Without a controller-manager the namespace stays Terminating; that is harmless here.
    core.delete_namespace(name)


SERVER_FIXTURES = {
    "kafka",
    "kafka3",
    "control_plane",
    "start_sidecar",
    "operator",
    "real_node",
}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server logs' tails to a failing test's report: the evidence is in them."""
    report = yield
    uses_servers = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if report.failed and uses_servers:
        for name, path in SERVER_LOGS.items():
            report.sections.append((f"server log: {name} ({path})", processes.log_tail(path)))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a server it started outlived it, and stop the stragglers."""
    leftovers = [p for p in processes.STARTED if p.alive()]
    for process in leftovers:
        process.stop(grace=5)
    if leftovers:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in leftovers)
        session.config.get_terminal_writer().line(f"processes left running: {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def start_sidecar(kafka: KafkaCluster, tmp_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    """Start real ``kafka-sidecar serve`` processes against the one-node cluster."""
    started: list[SidecarProcess] = []

    def start(bootstrap: str | None = None, wait_ready: bool = True, **env: str) -> SidecarProcess:
        sidecar = SidecarProcess(
            bootstrap or kafka.bootstrap_servers, tmp_path / f"sidecar{len(started)}", env=env
        )
        started.append(sidecar)
        SERVER_LOGS[f"sidecar{len(started)}"] = sidecar.workdir / "sidecar.log"
        return sidecar.start(wait_ready=wait_ready)

    yield start
    for sidecar in started:
        sidecar.stop()
    for index in range(len(started)):
        SERVER_LOGS.pop(f"sidecar{index + 1}", None)


@pytest.fixture
def sidecar_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[SidecarProcess], None]:
    """Point this process's (and its children's) clients at a sidecar, as the webhook would."""

    def point(sidecar: SidecarProcess) -> None:
        monkeypatch.setenv("KAFKA_SIDECAR_MODE", "sidecar")
        monkeypatch.setenv("KAFKA_SIDECAR_ADDRESS", sidecar.address)
        monkeypatch.setenv("KAFKA_SIDECAR_PROBE_INTERVAL_MS", "200")

    return point


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> None:
    """The KafkaSidecarPolicy CRD from crds/, applied and established."""
    crd = Path(__file__).parent.parent / "crds" / "kafkasidecarpolicies.kafka-sidecar.io.yaml"
    kubectl = [str(control_plane.kubectl), f"--kubeconfig={control_plane.kubeconfig}"]
    kubectl_apply_crd(kubectl, "-f", str(crd))


def kubectl_apply_crd(kubectl: list[str], *source: str) -> None:
    """Apply the CRDs (``-f FILE`` or ``-k DIR``) and wait until ours is established (polling:
    `kubectl wait` errors out while a new CRD has no status.conditions at all yet)."""
    applied = subprocess.run(
        [*kubectl, "apply", *source], capture_output=True, text=True, check=False
    )
    assert applied.returncode == 0, applied.stderr
    status = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait_for(
        lambda: (
            subprocess.run(
                [*kubectl, "get", "crd", "kafkasidecarpolicies.kafka-sidecar.io", "-o", status],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            == "True"
        ),
        timeout=60,
        what="the CRD to be established",
    )


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, crd_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the session (--local: it registers its webhook), fast status timers."""
    process = OperatorProcess(
        control_plane.kubeconfig,
        tmp_path_factory.mktemp("operator"),
        env={
            "KAFKA_SIDECAR_OPERATOR_FALLBACK_INTERVAL": "1",
            # Not the manifests' name: tests apply those too.
            "KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": "kafka-sidecar-test",
        },
    )
    try:
        process.start()
        SERVER_LOGS["operator"] = process.workdir / "operator.log"
        yield process
    finally:
        process.stop()


@pytest.fixture
def enabled_namespace(api_client: k8s.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    """A namespace labelled for injection, once the webhook demonstrably answers in it."""
    core = k8s.CoreV1Api(api_client)
    name = unique_name("inj")
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"kafka-sidecar.io/injection": "enabled"}}}
    )
    probe = {
        "metadata": {"name": "probe", "annotations": {"kafka-sidecar.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }
    deadline = time.monotonic() + 30
    while True:
        dry = core.create_namespaced_pod(name, probe, dry_run="All")
        if "kafka-sidecar.io/status" in (dry.metadata.annotations or {}):
            break
        assert time.monotonic() < deadline, "the injection webhook never answered"
        time.sleep(0.3)
    yield name
    core.delete_namespace(name)
