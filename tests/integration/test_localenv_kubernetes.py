"""The local control plane is a real kube-apiserver: it serves CRDs and calls admission webhooks."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_operator.certificates import CertificateAuthority
from tests.support import kubectl, unique_name

pytestmark = pytest.mark.integration

SMOKE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.smoke.kafka-sidecar.io
spec:
  group: smoke.kafka-sidecar.io
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gdg]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"""


def test_kubectl_is_built_from_the_same_kubernetes_version(control_plane: ControlPlane) -> None:
    versions = json.loads(kubectl(control_plane, "version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == versions["serverVersion"]["gitVersion"]
    assert versions["serverVersion"]["gitVersion"].startswith("v1.")


def test_applied_crd_is_served_and_validates(control_plane: ControlPlane, namespace: str) -> None:
    kubectl(control_plane, "apply", "-f", "-", stdin=SMOKE_CRD)
    kubectl(
        control_plane,
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/gadgets.smoke.kafka-sidecar.io",
    )
    gadget = {
        "apiVersion": "smoke.kafka-sidecar.io/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": namespace},
        "spec": {"size": 3},
    }
    kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(gadget))
    assert "g1" in kubectl(control_plane, "get", "gdg", "-n", namespace).stdout

    bad = {**gadget, "metadata": {"name": "g2", "namespace": namespace}, "spec": {"size": 0}}
    proc = subprocess.run(
        [
            str(control_plane.kubectl),
            f"--kubeconfig={control_plane.kubeconfig}",
            "apply",
            "-f",
            "-",
        ],
        input=json.dumps(bad),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "spec.size" in proc.stderr


class LabellingWebhook(BaseHTTPRequestHandler):
    """Answers AdmissionReviews with a JSONPatch that adds one label, and counts its calls."""

    calls: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        self.calls.append(request["uid"])
        patch = [{"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "smoke"}}]
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": request["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on calls instead."""


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A local HTTPS webhook; yields its URL and the CA bundle kube-apiserver must trust."""
    ca = CertificateAuthority.create(tmp_path, "webhook-ca")
    serving = ca.issue(tmp_path, "webhook", common_name="webhook", hosts=("127.0.0.1",))
    server = ThreadingHTTPServer(("127.0.0.1", 0), LabellingWebhook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(serving.cert), str(serving.key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/mutate", ca.pair.cert.read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_registered_mutating_webhook_is_called_and_its_patch_stored(
    api_client: k8s.ApiClient, namespace: str, webhook_server: tuple[str, bytes]
) -> None:
    url, ca_bundle = webhook_server
    name = unique_name("smoke")
    admission = k8s.AdmissionregistrationV1Api(api_client)
    admission.create_mutating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "smoke.kafka-sidecar.io",
                    "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }
    )
    core = k8s.CoreV1Api(api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    try:
        # The API server picks new webhook configurations up from an informer: wait for it.
        deadline = time.monotonic() + 30
        while True:
            dry = core.create_namespaced_pod(namespace, pod, dry_run="All")
            if (dry.metadata.labels or {}).get("mutated-by") == "smoke":
                break
            assert time.monotonic() < deadline, "webhook never took effect"
            time.sleep(0.5)
        core.create_namespaced_pod(namespace, pod)
        stored = core.read_namespaced_pod("p", namespace)
        assert stored.metadata.labels == {"mutated-by": "smoke"}
        assert LabellingWebhook.calls
    finally:
        admission.delete_mutating_webhook_configuration(name)
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
