"""The deployment manifests against the real API server: they render, apply (server-side dry
run), and grant the operator exactly what it uses; the kubectl plugin and self-managed TLS."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_operator import kubectl_plugin, tls
from tests.support import create_policy, kubectl, pod_body, wait_for, wait_policy_active

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent.parent
OVERLAYS = [
    "crd",
    "rbac",
    "manager",
    "webhook",
    "certmanager",
    "default",
    "selfsigned",
    "monitoring",
]
SA = "system:serviceaccount:kafka-sidecar-system:kafka-sidecar-operator"
STUB_CRDS = [  # the kinds third-party operators define; only their schema is needed here
    ("cert-manager.io", "issuers", "Issuer", "Namespaced"),
    ("cert-manager.io", "certificates", "Certificate", "Namespaced"),
    ("monitoring.coreos.com", "podmonitors", "PodMonitor", "Namespaced"),
    ("monitoring.coreos.com", "servicemonitors", "ServiceMonitor", "Namespaced"),
    ("monitoring.coreos.com", "prometheusrules", "PrometheusRule", "Namespaced"),
]


@pytest.fixture(scope="module")
def installed_crds(control_plane: ControlPlane) -> None:
    """Our CRDs (for real) and stand-ins for cert-manager's and the Prometheus Operator's."""
    for group, plural, kind, scope in STUB_CRDS:
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "scope": scope,
                "names": {"plural": plural, "kind": kind, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
        kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(crd))
    kubectl(control_plane, "apply", "-k", str(ROOT / "manifests" / "crd"))
    kubectl(control_plane, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl(control_plane, "create", "namespace", "kafka-sidecar-system", check=False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders(control_plane: ControlPlane, overlay: str) -> None:
    rendered = kubectl(control_plane, "kustomize", str(ROOT / "manifests" / overlay)).stdout
    assert "kind:" in rendered


@pytest.mark.parametrize("overlay", ["default", "selfsigned", "monitoring"])
def test_rendered_overlay_passes_server_side_dry_run(
    control_plane: ControlPlane, installed_crds: None, overlay: str
) -> None:
    rendered = kubectl(control_plane, "kustomize", str(ROOT / "manifests" / overlay)).stdout
    applied = kubectl(control_plane, "apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert "(server dry run)" in applied.stdout


@pytest.fixture(scope="module")
def rbac_applied(control_plane: ControlPlane, installed_crds: None) -> Iterator[None]:
    kubectl(control_plane, "apply", "-k", str(ROOT / "manifests" / "rbac"))
    yield
    kubectl(control_plane, "delete", "-k", str(ROOT / "manifests" / "rbac"), check=False)


def can_i(plane: ControlPlane, *args: str) -> bool:
    """``kubectl auth can-i`` as the operator's service account (exit 1 means "no")."""
    return kubectl(plane, "auth", "can-i", f"--as={SA}", *args, check=False).stdout.strip() == "yes"


@pytest.mark.parametrize(
    "request_args",
    [
        ["watch", "kafkasidecarpolicies.kafka-sidecar.io", "-A"],
        ["patch", "kafkasidecarpolicies.kafka-sidecar.io", "--subresource=status", "-n", "any"],
        ["list", "pods", "-A"],
        ["watch", "namespaces"],
        ["create", "events", "-n", "any"],
        ["list", "customresourcedefinitions.apiextensions.k8s.io"],
        ["get", "clusterkopfpeerings.kopf.dev/kafka-sidecar-operator"],
        ["patch", "clusterkopfpeerings.kopf.dev/kafka-sidecar-operator"],
    ],
)
def test_rbac_allows_every_verb_the_operator_uses(
    control_plane: ControlPlane, rbac_applied: None, request_args: list[str]
) -> None:
    assert can_i(control_plane, *request_args), request_args


# What only one overlay needs, by the file that grants it there.
OVERLAY_RIGHTS = {
    "selfsigned/tls_rbac.yaml": [
        ["patch", "mutatingwebhookconfigurations/kafka-sidecar-injector"],
        ["update", "secrets/kafka-sidecar-webhook-tls", "-n", "kafka-sidecar-system"],
        ["create", "secrets", "-n", "kafka-sidecar-system"],
    ],
    "monitoring/rbac.yaml": [
        ["create", "prometheusrules.monitoring.coreos.com", "-n", "any"],
        ["patch", "prometheusrules.monitoring.coreos.com", "-n", "any"],
    ],
}


@pytest.mark.parametrize("grant", sorted(OVERLAY_RIGHTS))
def test_secrets_caBundle_and_prometheus_rule_rights_come_only_with_their_overlay(
    control_plane: ControlPlane, rbac_applied: None, grant: str
) -> None:
    path = str(ROOT / "manifests" / grant)
    for request_args in OVERLAY_RIGHTS[grant]:
        assert not can_i(control_plane, *request_args), ("without the overlay", request_args)
    kubectl(control_plane, "apply", "-f", path)
    try:
        for request_args in OVERLAY_RIGHTS[grant]:
            assert can_i(control_plane, *request_args), ("with the overlay", request_args)
    finally:
        kubectl(control_plane, "delete", "-f", path, check=False)


@pytest.mark.parametrize(
    "request_args",
    [
        ["get", "secrets", "-A"],
        ["get", "secrets/other", "-n", "kafka-sidecar-system"],
        ["create", "secrets", "-n", "default"],
        ["delete", "pods", "-n", "any"],
        ["patch", "pods", "-n", "any"],
        ["create", "pods", "-n", "any"],
        ["patch", "mutatingwebhookconfigurations/someone-elses"],
        ["delete", "mutatingwebhookconfigurations/kafka-sidecar-injector"],
        ["delete", "kafkasidecarpolicies.kafka-sidecar.io", "-n", "any"],
        ["patch", "kafkasidecarpolicies.kafka-sidecar.io", "-n", "any"],
        ["get", "prometheusrules.monitoring.coreos.com", "-n", "any"],
        ["delete", "prometheusrules.monitoring.coreos.com", "-n", "any"],
        ["create", "clusterrolebindings"],
    ],
)
def test_rbac_denies_what_the_operator_does_not_need(
    control_plane: ControlPlane, rbac_applied: None, request_args: list[str]
) -> None:
    assert not can_i(control_plane, *request_args), request_args


def test_self_managed_tls_stores_serves_and_trusts_its_certificate(
    control_plane: ControlPlane, api_client: k8s.ApiClient, installed_crds: None, tmp_path: Path
) -> None:
    kubectl(
        control_plane,
        "apply",
        "-f",
        str(ROOT / "manifests" / "webhook" / "mutatingwebhookconfiguration.yaml"),
    )
    try:
        tls.ensure(api_client, "kafka-sidecar-system", tmp_path, "kafka-sidecar-injector")
        served = (tmp_path / "tls.crt").read_bytes()
        mwc = k8s.AdmissionregistrationV1Api(api_client).read_mutating_webhook_configuration(
            "kafka-sidecar-injector"
        )
        assert (
            base64.b64decode(mwc.webhooks[0].client_config.ca_bundle)
            == (tmp_path / "ca.crt").read_bytes()
        )
        assert not tls.needs_renewal(served)
        tls.ensure(api_client, "kafka-sidecar-system", tmp_path / "again", "kafka-sidecar-injector")
        assert (tmp_path / "again" / "tls.crt").read_bytes() == served  # reused, not reissued
    finally:
        kubectl(
            control_plane,
            "delete",
            "mutatingwebhookconfiguration",
            "kafka-sidecar-injector",
            check=False,
        )
        kubectl(
            control_plane,
            "delete",
            "secret",
            "-n",
            "kafka-sidecar-system",
            "kafka-sidecar-webhook-tls",
            check=False,
        )


def test_kubectl_plugin_status_and_explain(
    api_client: k8s.ApiClient, enabled_namespace: str, control_plane: ControlPlane
) -> None:
    create_policy(api_client, enabled_namespace, name="orders", rollout={"percentage": 100})
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    core.create_namespaced_pod(enabled_namespace, pod_body("web-1"))
    core.create_namespaced_pod(
        enabled_namespace,
        pod_body(
            "web-2",
            annotations={"kafka-sidecar.io/inject": "true", "kafka-sidecar.io/native": "maybe"},
        ),
    )
    wait_for(
        lambda: (
            " 2 "
            in kubectl(control_plane, "get", "ksp", "-n", enabled_namespace).stdout.splitlines()[1]
        ),
        what="status",
    )
    plugin = [
        str(ROOT / ".venv" / "bin" / "kubectl-kafka_sidecar"),
        f"--kubeconfig={control_plane.kubeconfig}",
    ]
    status = subprocess.run(
        [*plugin, "status", "-n", enabled_namespace], capture_output=True, text=True, check=True
    ).stdout
    header, row = status.splitlines()[:2]
    assert header.split()[:4] == ["NAMESPACE", "POLICY", "TARGET", "ACTUAL"]
    assert row.split()[:6] == [enabled_namespace, "orders", "100%", "50%", "1", "2"]
    explained = kubectl_plugin.explain_pod(api_client, enabled_namespace, "web-2")
    assert "skipped (reason: invalid-override)" in explained
    assert "kafka-sidecar.io/native='maybe' is invalid" in explained
    assert "kafka-sidecar.io/injection=enabled (enabled)" in explained
    assert f"{enabled_namespace}/orders: rollout 100% by workload" in explained
    assert "Sidecar:     absent" in explained
    assert "Sidecar:     present" in kubectl_plugin.explain_pod(
        api_client, enabled_namespace, "web-1"
    )


def test_cert_manager_signs_the_serving_certificate_with_a_ca_issuer_chain(
    control_plane: ControlPlane,
) -> None:
    rendered = kubectl(control_plane, "kustomize", str(ROOT / "manifests" / "default")).stdout
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered) if o}
    leaf = objects[("Certificate", "kafka-sidecar-webhook")]["spec"]
    issuer = objects[("Issuer", leaf["issuerRef"]["name"])]["spec"]
    ca = objects[("Certificate", "kafka-sidecar-webhook-ca")]["spec"]
    assert issuer["ca"]["secretName"] == ca["secretName"]
    assert ca["isCA"] is True
    assert "selfSigned" in objects[("Issuer", ca["issuerRef"]["name"])]["spec"]
