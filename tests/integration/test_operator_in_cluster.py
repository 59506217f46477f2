"""The operator as a cluster runs it: an image UID with no passwd entry, several replicas, hostile
pods and endpoints — against the real kube-apiserver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import pwd
import shutil
import ssl
import stat
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from kubernetes import client as k8s

from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from kafka_sidecar_localenv.processes import free_port
from kafka_sidecar_operator import tls
from kafka_sidecar_operator.conditions import PodView
from kafka_sidecar_operator.fallback import PodSample
from kafka_sidecar_operator.pod_record import StatusRecord
from kafka_sidecar_operator.rollout import bucket, selected
from kafka_sidecar_operator.scraping import Scraper
from kafka_sidecar_operator.webhook import webhook_configuration
from tests.conftest import SERVER_LOGS
from tests.integration.test_operator_lifecycle import Endpoint, mark_running
from tests.support import (
    create_policy,
    kubectl,
    pod_body,
    status_of,
    unique_name,
    wait_for,
    wait_policy_active,
)

pytestmark = pytest.mark.integration

IMAGE_UID = 65532  # the operator image's user, which has no passwd entry
LOGIN_VARIABLES = ("USER", "LOGNAME", "LNAME", "USERNAME")


@contextlib.contextmanager
def traversable_by_others(paths: list[Path]) -> Iterator[None]:
    """Let other UIDs traverse (not list) every directory above ``paths``; restore the modes after.

    The interpreter may live under a 0700 home; a process of the image's UID must reach it.
    """
    changed: dict[Path, int] = {}
    try:
        for path in paths:
            for directory in [*reversed(path.parents)]:
                mode = stat.S_IMODE(directory.stat().st_mode)
                if directory not in changed and not mode & stat.S_IXOTH:
                    changed[directory] = mode
                    directory.chmod(mode | stat.S_IXOTH)
        yield
    finally:
        for directory, mode in changed.items():
            directory.chmod(mode)


@pytest.fixture
def image_uid_home(control_plane: ControlPlane) -> Iterator[Path]:
    """A directory the image's UID owns, holding a self-contained copy of the kubeconfig."""
    with pytest.raises(KeyError):
        pwd.getpwuid(IMAGE_UID)  # the point of the test: no passwd entry
    home = Path(tempfile.mkdtemp(prefix="kafka-sidecar-uid-"))
    flat = kubectl(control_plane, "config", "view", "--raw", "--flatten").stdout
    (home / "kubeconfig").write_text(flat)
    for path in (home, home / "kubeconfig"):
        os.chown(path, IMAGE_UID, IMAGE_UID)
    (home / "kubeconfig").chmod(0o600)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def uids_of(pid: int) -> set[int]:
    """Real, effective, saved and filesystem UIDs of a running process."""
    line = next(
        row
        for row in Path(f"/proc/{pid}/status").read_text().splitlines()
        if row.startswith("Uid:")
    )
    return {int(uid) for uid in line.split()[1:]}


def test_operator_starts_as_a_uid_without_a_passwd_entry_and_no_login_variables(
    crd_installed: None, image_uid_home: Path, tmp_path: Path
) -> None:
    interpreter = Path(sys.executable)
    process = OperatorProcess(
        image_uid_home / "kubeconfig",
        tmp_path / "operator",
        env={"KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": unique_name("kafka-sidecar-uid")},
    )
    unset = [arg for name in LOGIN_VARIABLES for arg in ("-u", name)]
    command = [
        "env",
        *unset,
        "setpriv",
        f"--reuid={IMAGE_UID}",
        f"--regid={IMAGE_UID}",
        "--clear-groups",
        str(interpreter),
        "-m",
        "kafka_sidecar_operator",
        "run",
        "--local",
    ]
    with traversable_by_others([interpreter.resolve(), Path(sys.prefix) / "lib"]):
        try:
            process.start(command=command)
            assert uids_of(process.pid) == {IMAGE_UID}
            assert "getpwuid" not in (process.workdir / "operator.log").read_text()
        finally:
            process.stop()


# -- replicas: standbys and cold starts answer from every policy ---------------------------------

CRDS = Path(__file__).parent.parent.parent / "manifests" / "crd"


@pytest.fixture
def peering(control_plane: ControlPlane, crd_installed: None) -> Iterator[str]:
    """kopf's ClusterKopfPeering CRD (from the manifests) and a peering object of our own."""
    kubectl(control_plane, "apply", "-f", str(CRDS / "kopf-peering.yaml"))
    kubectl(
        control_plane,
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    name = unique_name("peering")
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(body))
    yield name
    kubectl(control_plane, "delete", "clusterkopfpeering", name, "--wait=false", check=False)


@pytest.fixture
def replicas(
    control_plane: ControlPlane, peering: str, tmp_path: Path
) -> Iterator[Callable[[], OperatorProcess]]:
    """Start operator processes peering like the manifests' replicas (each --local registers its
    own webhook, under its own name); all stopped after the test."""
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        process = OperatorProcess(
            control_plane.kubeconfig,
            tmp_path / f"replica{len(started)}",
            env={
                "KAFKA_SIDECAR_OPERATOR_PEERING": peering,
                "KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": unique_name("kafka-sidecar-replica"),
                "KAFKA_SIDECAR_OPERATOR_FALLBACK_INTERVAL": "1",
            },
        )
        started.append(process)
        SERVER_LOGS[f"replica{len(started)}"] = process.workdir / "operator.log"
        return process.start()

    yield start
    for process in started:
        process.stop()
    for index in range(len(started)):
        SERVER_LOGS.pop(f"replica{index + 1}", None)


def review(namespace: str, pod: dict[str, Any], dry_run: bool = True) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for a pod CREATE."""
    pod = {**pod, "metadata": {**pod["metadata"], "namespace": namespace}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": dry_run,
        },
    }


def admit(process: OperatorProcess, body: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview to a replica's webhook; the pod's status record it would write.

    The test calls the replica itself (its certificate is its own, made at start): this is what
    the API server does, minus the choice of replica a Service would make.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{process.webhook_port}/inject-sidecar",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer = json.loads(response.read())["response"]
    assert answer["allowed"], answer
    for op in json.loads(base64.b64decode(answer.get("patch") or "W10=")):
        value = op.get("value")
        if op["path"].endswith("kafka-sidecar.io~1status"):
            return dict(json.loads(value))
        if op["path"] == "/metadata/annotations" and "kafka-sidecar.io/status" in value:
            return dict(json.loads(value["kafka-sidecar.io/status"]))
        if op["path"] == "/metadata" and "kafka-sidecar.io/status" in (
            value.get("annotations") or {}
        ):
            return dict(json.loads(value["annotations"]["kafka-sidecar.io/status"]))
    return {}


def kopf_paused(process: OperatorProcess) -> bool:
    """kopf starts paused until peering says otherwise, and logs each change."""
    changes = [
        line
        for line in (process.workdir / "operator.log").read_text().splitlines()
        if "Pausing operations" in line or "Resuming operations" in line
    ]
    return not changes or "Resuming operations" not in changes[-1]


def ready(process: OperatorProcess) -> bool:
    try:
        url = f"http://127.0.0.1:{process.health_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_every_replica_answers_from_every_policy_also_while_peering_pauses_it(
    api_client: k8s.ApiClient, replicas: Callable[[], OperatorProcess], namespace: str
) -> None:
    first = replicas()
    create_policy(api_client, namespace, rollout={"percentage": 100, "granularity": "pod"})
    second = replicas()
    # One of the two keeps its kopf watches paused in favour of the other (peering priorities).
    wait_for(
        lambda: sorted(kopf_paused(p) for p in (first, second)) == [False, True],
        what="kopf peering to pause exactly one replica",
    )
    leader = first if not kopf_paused(first) else second
    # A replica that is not ready yet admits pods unchanged; the Service would not send it any.
    wait_for(lambda: ready(first) and ready(second), what="both replicas ready")
    wait_for(
        lambda: admit(leader, review(namespace, pod_body("probe"))).get("reason") == "injected",
        what="the policy known to the leader",
    )
    for process in (first, second):
        for n in range(20):
            status = admit(process, review(namespace, pod_body(f"web-{n}")))
            assert status.get("reason") == "injected", (process.process, status)
    # The leader goes; the standby takes over writing status (kopf resumes it at once when the
    # leader leaves the peering on SIGTERM).
    standby = second if leader is first else first
    leader.stop()
    k8s.CoreV1Api(api_client).create_namespaced_pod(namespace, pod_body("after"))
    wait_for(
        lambda: read_policy(api_client, namespace).get("status", {}).get("matchedPods") == 1,
        what="status written by the replica left",
    )
    status = admit(standby, review(namespace, pod_body("later")))
    assert status.get("reason") == "injected", status


def test_a_replica_is_ready_only_once_its_answers_include_every_policy(
    api_client: k8s.ApiClient, replicas: Callable[[], OperatorProcess], namespace: str
) -> None:
    for n in range(30):
        create_policy(
            api_client,
            namespace,
            name=f"p{n:02d}",
            selector={"matchLabels": {"app": f"app{n:02d}"}},
        )
    cold = replicas()  # returns once /healthz answers: the cold start
    wait_for(lambda: ready(cold), timeout=30, what="readiness")
    for n in range(30):
        pod = pod_body(f"w{n}", labels={"app": f"app{n:02d}"})
        status = admit(cold, review(namespace, pod))
        assert status.get("policy") == f"{namespace}/p{n:02d}", status


# -- pod-authored state is not trusted --------------------------------------------------------


def forged_record(namespace: str, bucket_value: float = 0.5) -> str:
    return json.dumps(
        {
            "decision": "injected",
            "reason": "injected",
            "policy": f"{namespace}/p",
            "bucket": bucket_value,
        }
    )


def read_policy(api: k8s.ApiClient, namespace: str, name: str = "p") -> dict[str, Any]:
    found: Any = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "kafka-sidecar.io", "v1alpha1", namespace, "kafkasidecarpolicies", name
    )
    return dict(found)


def test_a_forged_bucket_does_not_move_a_pod_into_the_rollout(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace, rollout={"percentage": 10, "granularity": "pod"})
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace, expect=None)
    name = next(
        f"web-{n}"
        for n in range(1000)
        if not selected(bucket(f"{enabled_namespace}/p", f"web-{n}"), 10)
    )
    annotations = {
        "kafka-sidecar.io/inject": "true",
        "kafka-sidecar.io/status": forged_record(enabled_namespace),
    }
    stored = core.create_namespaced_pod(enabled_namespace, pod_body(name, annotations=annotations))
    assert status_of(stored)["reason"] == "outside-rollout"
    assert status_of(stored)["bucket"] != 0.5
    assert stored.spec.init_containers is None


@pytest.mark.parametrize("percentage", [0, 100])
def test_a_pod_with_its_own_sidecar_and_record_is_neither_labelled_nor_counted(
    api_client: k8s.ApiClient, enabled_namespace: str, percentage: int
) -> None:
    create_policy(api_client, enabled_namespace, rollout={"percentage": percentage})
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace, expect=None)
    body = pod_body(
        "own",
        annotations={
            "kafka-sidecar.io/inject": "true",
            "kafka-sidecar.io/status": forged_record(enabled_namespace),
        },
        labels={"app": "web", "kafka-sidecar.io/injected": "true"},
    )
    body["spec"]["containers"].append({"name": "kafka-sidecar", "image": "mine:1"})
    stored = core.create_namespaced_pod(enabled_namespace, body)
    assert status_of(stored)["decision"] == "skipped"
    assert status_of(stored)["reason"] == "already-injected"
    assert "kafka-sidecar.io/injected" not in (stored.metadata.labels or {})
    policy = wait_for(
        lambda: (
            found
            if (found := read_policy(api_client, enabled_namespace))
            .get("status", {})
            .get("matchedPods")
            == 1
            else None
        ),
        what="the pod in the policy's status",
    )
    assert policy["status"]["injectedPods"] == 0


# -- overrides and malformed pods --------------------------------------------------------------


def test_an_override_above_the_limit_admits_the_pod_without_the_sidecar(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    annotations = {"kafka-sidecar.io/inject": "true", "kafka-sidecar.io/memory-request": "1Gi"}
    stored = core.create_namespaced_pod(enabled_namespace, pod_body("big", annotations=annotations))
    assert stored.spec.init_containers is None
    assert status_of(stored)["reason"] == "invalid-override"
    assert "memory request 1Gi would exceed its limit 256Mi" in status_of(stored)["message"]


def test_a_pod_with_null_containers_is_a_skip_with_a_reason_not_an_error(
    operator: OperatorProcess,
    api_client: k8s.ApiClient,
    control_plane: ControlPlane,
    enabled_namespace: str,
) -> None:
    create_policy(api_client, enabled_namespace)
    wait_policy_active(k8s.CoreV1Api(api_client), enabled_namespace)
    body = pod_body("null")
    body["spec"]["containers"] = None
    before = operator.metrics()
    refused = kubectl(  # raw: the client library would not send a null list
        control_plane,
        "create",
        "--raw",
        f"/api/v1/namespaces/{enabled_namespace}/pods?dryRun=All",
        "-f",
        "-",
        stdin=json.dumps(body),
        check=False,
    )
    assert refused.returncode != 0  # the API server's own validation, after the webhook
    assert "spec.containers: Required value" in refused.stderr
    after = operator.metrics()
    assert counter(after, "malformed-pod") == counter(before, "malformed-pod") + 1
    assert counter(after, "internal-error", "error") == counter(before, "internal-error", "error")


def counter(metrics: str, reason: str, result: str = "skipped") -> float:
    line = f'kafka_sidecar_operator_injections_total{{reason="{reason}",result="{result}"}} '
    return next(
        (float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line)), 0.0
    )


# -- dry runs ----------------------------------------------------------------------------------


def test_a_dry_run_posts_no_event(api_client: k8s.ApiClient, enabled_namespace: str) -> None:
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    annotations = {"kafka-sidecar.io/inject": "true", "kafka-sidecar.io/cpu-limit": "plenty"}
    dry = core.create_namespaced_pod(
        enabled_namespace, pod_body("dry", annotations=annotations), dry_run="All"
    )
    assert status_of(dry)["reason"] == "invalid-override"  # the webhook did answer
    core.create_namespaced_pod(enabled_namespace, pod_body("real", annotations=annotations))
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(enabled_namespace).items
            if e.reason == "InjectionSkipped"
        ],
        what="the real pod's InjectionSkipped Event",
    )
    assert [e.involved_object.name for e in events] == ["real"]


# -- status, PrometheusRules and finalizers ---------------------------------------------------

PROMETHEUS_RULE_CRD = """
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


def test_status_is_written_while_the_prometheus_rule_cannot_be(
    api_client: k8s.ApiClient,
    control_plane: ControlPlane,
    enabled_namespace: str,
    request: pytest.FixtureRequest,
) -> None:
    kubectl(control_plane, "apply", "-f", "-", stdin=PROMETHEUS_RULE_CRD)
    kubectl(
        control_plane,
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/prometheusrules.monitoring.coreos.com",
    )
    # Every PrometheusRule write in the namespace is refused, as missing rights or an exhausted
    # quota would refuse it in a cluster.
    deny = unique_name("deny-rules")
    policy_body_: Any = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": deny},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["monitoring.coreos.com"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["prometheusrules"],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "PrometheusRules refused here"}],
        },
    }
    binding: Any = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": deny},
        "spec": {
            "policyName": deny,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": enabled_namespace}
                }
            },
        },
    }
    kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(policy_body_))
    kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(binding))
    request.addfinalizer(
        lambda: kubectl(
            control_plane,
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            deny,
            check=False,
        )
    )
    probe = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "probe"},
        "spec": {},
    }

    def refused() -> bool:
        try:
            k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
                "monitoring.coreos.com",
                "v1",
                enabled_namespace,
                "prometheusrules",
                probe,
                dry_run="All",
            )
        except k8s.ApiException as error:
            return bool(error.status in (403, 422))
        return False

    wait_for(refused, what="PrometheusRule writes refused")
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    core.create_namespaced_pod(enabled_namespace, pod_body("web"))
    wait_for(
        lambda: (
            read_policy(api_client, enabled_namespace).get("status", {}).get("injectedPods") == 1
        ),
        what="status with the injected pod",
    )
    rules: Any = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", enabled_namespace, "prometheusrules"
    )
    assert rules["items"] == []  # the rule really was refused


def test_a_policy_carries_no_finalizer_and_is_deleted_while_the_operator_is_away(
    api_client: k8s.ApiClient, operator: OperatorProcess, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace)
    wait_for(
        lambda: read_policy(api_client, enabled_namespace).get("status", {}).get("conditions"),
        what="the policy reconciled",
    )
    reconciled = read_policy(api_client, enabled_namespace)["metadata"]
    assert not reconciled.get("finalizers")
    assert not [k for k in reconciled.get("annotations") or {} if k.startswith("kopf.")]
    operator.kill()
    try:
        k8s.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            "kafka-sidecar.io", "v1alpha1", enabled_namespace, "kafkasidecarpolicies", "p"
        )

        def gone() -> bool:
            try:
                read_policy(api_client, enabled_namespace)
            except k8s.ApiException as error:
                return bool(error.status == 404)
            return False

        wait_for(gone, timeout=10, what="the policy deleted with the operator away")
    finally:
        operator.start()


# -- scraping hostile endpoints ---------------------------------------------------------------

BOMB_MIB = 128


def gzip_bomb(mebibytes: int) -> bytes:
    """A gzip body of ``mebibytes`` MiB of zeros (about a thousandth of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join(packer.compress(chunk) for _ in range(mebibytes)) + packer.flush()


class Hostile:
    """An HTTP server on a loopback address answering every request in one hostile way."""

    def __init__(self, host: str, port: int, behaviour: str) -> None:
        self.hits = 0
        self.stopping = threading.Event()
        bomb = gzip_bomb(BOMB_MIB) if behaviour == "gzip-bomb" else b""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                try:
                    if behaviour == "gzip-bomb":
                        self.send_header("Content-Encoding", "gzip")
                        self.send_header("Content-Length", str(len(bomb)))
                        self.end_headers()
                        self.wfile.write(bomb)
                    elif behaviour == "slow-drip":
                        self.send_header("Content-Length", str(1 << 20))
                        self.end_headers()
                        while not outer.stopping.wait(0.2):
                            self.wfile.write(b"#")
                            self.wfile.flush()
                    elif behaviour == "huge-body":
                        self.send_header("Content-Length", str(1 << 32))
                        self.end_headers()
                        chunk = b"# " * (1 << 19)
                        while not outer.stopping.is_set():
                            self.wfile.write(chunk)
                    else:  # honest
                        body = b'kafka_sidecar_client_events_total{outcome="attempts"} 1\n'
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                except OSError:
                    pass  # the operator hung up, as it should

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_hostile_metrics_endpoints_neither_grow_the_operator_nor_slow_the_webhook(
    operator: OperatorProcess, api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    port = free_port()
    behaviours = {"127.0.0.2": "gzip-bomb", "127.0.0.3": "slow-drip", "127.0.0.4": "huge-body"}
    servers = {ip: Hostile(ip, port, b) for ip, b in behaviours.items()}
    servers["127.0.0.5"] = Hostile("127.0.0.5", port, "honest")
    try:
        create_policy(
            api_client,
            enabled_namespace,
            sidecar={"bootstrapServers": "k:9092", "metricsPort": port},
        )
        core = k8s.CoreV1Api(api_client)
        wait_policy_active(core, enabled_namespace)
        for index, ip in enumerate(behaviours):
            core.create_namespaced_pod(enabled_namespace, pod_body(f"hostile-{index}"))
            mark_running(core, enabled_namespace, f"hostile-{index}", ip, ready=True)
        # Not injected by the operator: its own sidecar container and a forged record.
        own = pod_body(
            "own",
            annotations={
                "kafka-sidecar.io/inject": "true",
                "kafka-sidecar.io/status": forged_record(enabled_namespace),
            },
        )
        own["spec"]["containers"].append(
            {
                "name": "kafka-sidecar",
                "image": "x",
                "ports": [{"name": "ks-metrics", "containerPort": port}],
            }
        )
        core.create_namespaced_pod(enabled_namespace, own)
        mark_running(core, enabled_namespace, "own", "127.0.0.5", ready=True)
        wait_for(  # the operator knows the pods (after a restart it may still be listing them)
            lambda: (
                read_policy(api_client, enabled_namespace).get("status", {}).get("injectedPods")
                == 3
            ),
            timeout=60,
            what="the three injected pods in the policy's status",
        )

        before = peak_rss_mib(operator.pid)
        failed_before = scrapes(operator.metrics(), "failed")
        slowest = 0.0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # about ten scrape rounds (interval 1 s)
            started = time.monotonic()
            core.create_namespaced_pod(enabled_namespace, pod_body("probe"), dry_run="All")
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.2)
        growth = peak_rss_mib(operator.pid) - before
        failed = scrapes(operator.metrics(), "failed") - failed_before
        print(
            f"peak RSS growth {growth:.1f} MiB, slowest dry-run create {slowest * 1000:.0f} ms, {failed:.0f} failed scrapes"
        )
        assert all(servers[ip].hits for ip in behaviours)  # each was scraped
        assert growth < BOMB_MIB / 2, f"operator peak RSS grew {growth:.1f} MiB"
        assert slowest < 0.5, f"a dry-run create took {slowest:.2f}s"
        assert failed >= 3 * 3  # every hostile endpoint failed in at least three rounds
        assert servers["127.0.0.5"].hits == 0  # never scraped: not injected by the operator
    finally:
        for server in servers.values():
            server.close()


def scrapes(metrics: str, outcome: str) -> float:
    line = f'kafka_sidecar_operator_fallback_scrapes_total{{outcome="{outcome}"}} '
    return next(
        (float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line)), 0.0
    )


# -- alert state across restarts --------------------------------------------------------------


def test_a_firing_alert_and_its_auto_pause_survive_an_operator_restart(
    operator: OperatorProcess, api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    endpoint = Endpoint("127.0.0.6", free_port())
    stop = threading.Event()
    try:
        create_policy(
            api_client,
            enabled_namespace,
            sidecar={
                "bootstrapServers": "k:9092",
                "metricsPort": endpoint.server.server_address[1],
            },
            fallback={
                "alert": {"maxRatio": 0.1, "window": "8s", "sustainedFor": "2s"},
                "autoPause": True,
            },
        )
        core = k8s.CoreV1Api(api_client)
        wait_policy_active(core, enabled_namespace)
        core.create_namespaced_pod(enabled_namespace, pod_body("web"))
        mark_running(core, enabled_namespace, "web", "127.0.0.6", ready=True)

        def emit_mostly_fallback() -> None:
            while not stop.wait(0.5):
                endpoint.emit(1000, 900)

        threading.Thread(target=emit_mostly_fallback, daemon=True).start()
        wait_for(
            lambda: (
                read_policy(api_client, enabled_namespace).get("status", {}).get("alertState")
                == "Firing"
            ),
            what="the alert firing",
        )
        wait_policy_active(core, enabled_namespace, expect="policy-paused")
        operator.kill()
        operator.start()
        seen: set[tuple[str, str]] = set()
        until = time.monotonic() + 6
        while time.monotonic() < until:
            state = read_policy(api_client, enabled_namespace)["status"]["alertState"]
            dry = core.create_namespaced_pod(enabled_namespace, pod_body("probe"), dry_run="All")
            seen.add((state, status_of(dry).get("reason", "not decided")))
            time.sleep(0.3)
        assert {state for state, _ in seen} == {"Firing"}, seen
        assert {reason for _, reason in seen} <= {"policy-paused", "not decided"}, seen
    finally:
        stop.set()
        endpoint.close()


# -- what a direct caller of the webhook can learn --------------------------------------------


def test_a_review_whose_object_names_another_namespace_gets_no_policy_of_that_namespace(
    operator: OperatorProcess, api_client: k8s.ApiClient, enabled_namespace: str, namespace: str
) -> None:
    """The request's namespace decides (the API server sets it), never the object's claim."""
    create_policy(
        api_client, enabled_namespace, sidecar={"bootstrapServers": "victim-brokers:9093"}
    )
    wait_policy_active(k8s.CoreV1Api(api_client), enabled_namespace)
    body = review(namespace, pod_body("spy"))
    body["request"]["object"]["metadata"]["namespace"] = enabled_namespace
    status = admit(operator, body)
    assert status.get("reason") == "no-policy", status
    assert "victim-brokers" not in json.dumps(status)


# -- self-managed TLS -------------------------------------------------------------------------


@pytest.fixture
def webhook_registration(api_client: k8s.ApiClient) -> Iterator[str]:
    """A MutatingWebhookConfiguration of our shape, for self-managed TLS to keep trusted."""
    name = unique_name("kafka-sidecar-tls")
    body: Any = webhook_configuration(
        name, {"url": "https://127.0.0.1:1/inject-sidecar"}, ("kube-system",)
    )
    for hook in body["webhooks"]:
        hook["namespaceSelector"] = {"matchLabels": {"never": "matches"}}
    admission = k8s.AdmissionregistrationV1Api(api_client)
    admission.create_mutating_webhook_configuration(body)
    yield name
    admission.delete_mutating_webhook_configuration(name)


def test_replicas_racing_to_create_the_tls_secret_end_up_serving_the_same_certificate(
    api_client: k8s.ApiClient,
    namespace: str,
    webhook_registration: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_store = tls.store

    def other_replica_first(*args: Any) -> None:
        monkeypatch.setattr(tls, "store", real_store)
        tls.ensure(api_client, namespace, tmp_path / "other", webhook_registration)
        real_store(*args)  # planned from the state before the other replica's write

    monkeypatch.setattr(tls, "store", other_replica_first)
    mine = tls.ensure(api_client, namespace, tmp_path / "mine", webhook_registration)
    secret = k8s.CoreV1Api(api_client).read_namespaced_secret(tls.SECRET_NAME, namespace)
    stored = base64.b64decode(secret.data["tls.crt"])
    assert mine.cert == stored
    assert (tmp_path / "mine" / "tls.crt").read_bytes() == stored
    assert (tmp_path / "other" / "tls.crt").read_bytes() == stored


def test_a_forced_renewal_keeps_the_ca_bundle_and_the_old_certificate_trusted(
    api_client: k8s.ApiClient, namespace: str, webhook_registration: str, tmp_path: Path
) -> None:
    first = tls.ensure(api_client, namespace, tmp_path / "a", webhook_registration)
    due = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=25)
    renewed = tls.ensure(api_client, namespace, tmp_path / "b", webhook_registration, now=due)
    assert renewed.cert != first.cert
    registered = k8s.AdmissionregistrationV1Api(api_client).read_mutating_webhook_configuration(
        webhook_registration
    )
    bundle = base64.b64decode(registered.webhooks[0].client_config.ca_bundle)
    assert bundle == first.bundle == renewed.bundle
    ca = x509.load_pem_x509_certificate(renewed.ca_cert)
    for served in (first.cert, renewed.cert):  # the other replica's, and the renewed one
        x509.load_pem_x509_certificate(served).verify_directly_issued_by(ca)


def test_scrapes_run_at_most_the_concurrency_limit_at_once() -> None:
    """Many pods answering slowly: the scraper never has more requests in flight than allowed."""
    in_flight = peak = 0

    async def slow(_: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        return web.Response(text='kafka_sidecar_client_events_total{outcome="attempts"} 1\n')

    async def scrape_twenty() -> list[PodSample]:
        app = web.Application()
        app.add_routes([web.get("/metrics", slow)])
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            pods = [
                PodView("ns", f"p{n}", {}, True, StatusRecord(), "127.0.0.1", port, True, True)
                for n in range(20)
            ]
            return await Scraper(concurrency=4).scrape_all(pods)
        finally:
            await runner.cleanup()

    samples = asyncio.run(scrape_twenty())
    assert len(samples) == 20
    assert peak == 4


def test_a_pod_cannot_rewrite_its_record_or_label_after_creation(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    injected = core.create_namespaced_pod(enabled_namespace, pod_body("web"))
    body = pod_body("own")
    body["spec"]["containers"].append({"name": "kafka-sidecar", "image": "mine:1"})
    skipped = core.create_namespaced_pod(enabled_namespace, body)
    forged = forged_record(enabled_namespace, bucket_value=0.1)
    for name in ("web", "own"):
        core.patch_namespaced_pod(
            name,
            enabled_namespace,
            {
                "metadata": {
                    "annotations": {"kafka-sidecar.io/status": forged, "note": "kept"},
                    "labels": {"kafka-sidecar.io/injected": "true", "tier": "kept"},
                }
            },
        )
    for before in (injected, skipped):
        after = core.read_namespaced_pod(before.metadata.name, enabled_namespace)
        assert status_of(after) == status_of(before)
        assert after.metadata.labels.get("kafka-sidecar.io/injected") == (
            before.metadata.labels or {}
        ).get("kafka-sidecar.io/injected")
        assert after.metadata.annotations["note"] == "kept"  # other edits go through
        assert after.metadata.labels["tier"] == "kept"


# -- the webhook does not wait for kopf's event loop ---------------------------------------------

# The operator with one more kopf handler: an async one that blocks kopf's event loop for 10 s
# (time.sleep, not asyncio.sleep) when a labelled ConfigMap appears, as a long burst of watch
# events and status work would. Markers in the work directory say when the block begins and ends.
LOOP_BLOCKER = """
import sys, time
from pathlib import Path
import kopf
from kafka_sidecar_operator.__main__ import main

@kopf.on.event("configmaps", labels={"block-kopf-loop": kopf.PRESENT})
async def block(**_):
    if Path(sys.argv[1], "blocking").exists():
        return
    Path(sys.argv[1], "blocking").write_text("")
    time.sleep(10)
    Path(sys.argv[1], "unblocked").write_text("")

sys.exit(main(["run", "--local"]))
"""


def test_the_webhook_answers_while_kopfs_event_loop_is_blocked(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "operator"
    process = OperatorProcess(
        control_plane.kubeconfig,
        workdir,
        env={"KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": unique_name("kafka-sidecar-busy")},
    )
    SERVER_LOGS["operator-busy"] = workdir / "operator.log"
    try:
        process.start(command=[sys.executable, "-c", LOOP_BLOCKER, str(workdir)])
        create_policy(api_client, namespace, rollout={"percentage": 100, "granularity": "pod"})
        wait_for(lambda: ready(process), what="the operator ready")
        wait_for(
            lambda: (
                admit(process, review(namespace, pod_body("probe"))).get("reason") == "injected"
            ),
            what="the policy known to the webhook",
        )
        k8s.CoreV1Api(api_client).create_namespaced_config_map(
            namespace, {"metadata": {"name": "block", "labels": {"block-kopf-loop": "yes"}}}
        )
        wait_for((workdir / "blocking").exists, what="kopf's event loop blocked")
        started = time.monotonic()
        statuses = [admit(process, review(namespace, pod_body(f"web-{n}"))) for n in range(5)]
        answered = time.monotonic() - started
        # Answered while the loop was still blocked, not once it was free again.
        assert not (workdir / "unblocked").exists(), f"answered after {answered:.1f} s"
        assert answered < 5, answered
        assert [s.get("reason") for s in statuses] == ["injected"] * 5, statuses
        wait_for((workdir / "unblocked").exists, what="kopf's event loop free again")
    finally:
        process.stop()
        SERVER_LOGS.pop("operator-busy", None)


def webhook_child(process: OperatorProcess) -> int:
    """The pid of the operator's webhook process (its child running multiprocessing's spawn)."""
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise AssertionError("no webhook process")


def test_a_webhook_process_that_dies_is_started_again_and_counts_in_the_operators_metrics(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    process = OperatorProcess(
        control_plane.kubeconfig,
        tmp_path / "operator",
        env={"KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": unique_name("kafka-sidecar-restart")},
    )
    SERVER_LOGS["operator-restart"] = process.workdir / "operator.log"
    try:
        process.start()
        create_policy(api_client, namespace, rollout={"percentage": 100, "granularity": "pod"})
        wait_for(lambda: ready(process), what="the operator ready")
        first = webhook_child(process)
        os.kill(first, 9)
        wait_for(lambda: not ready(process), what="not ready without its webhook process")
        wait_for(lambda: ready(process), what="ready again")
        assert webhook_child(process) != first
        status = admit(process, review(namespace, pod_body("after")))
        assert status.get("reason") == "injected", status
        # The new process's observations reach the operator's /metrics.
        wait_for(lambda: injected_count(process.metrics()) == 1, timeout=10, what="the count")
    finally:
        process.stop()
        SERVER_LOGS.pop("operator-restart", None)


def injected_count(metrics: str) -> float:
    return sum(
        float(row.split()[-1])
        for row in metrics.splitlines()
        if row.startswith("kafka_sidecar_operator_injections_total{") and 'result="injected"' in row
    )
