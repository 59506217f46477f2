"""The sample app's Deployment on the real node: for the e2e tests and the demo."""

from __future__ import annotations

from typing import Any

# The restricted Pod Security Standard, which the e2e namespaces enforce.
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def opted_in_pod(
    image: str,
    name: str = "probe",
    labels: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A bare pod that opts in to injection and that the restricted Pod Security Standard admits:
    what the tests and the chaos suite create (often as a dry run) to ask the webhook."""
    spec: dict[str, Any] = {
        "securityContext": {"runAsUser": 10001},
        "containers": [{"name": "app", "image": image, "securityContext": RESTRICTED}],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "metadata": {
            "name": name,
            "labels": labels or {},
            "annotations": {"kafka-sidecar.io/inject": "true"},
        },
        "spec": spec,
    }


def sample_app_deployment(
    name: str,
    image: str,
    bootstrap: str,
    topic: str,
    workers: int,
    rate: int,
    replicas: int = 2,
) -> dict[str, Any]:
    """An opted-in Deployment of the sample app image for the real node. Its containers run as
    UID 10001 (not the sidecar's 65532) under the restricted Pod Security Standard."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"kafka-sidecar.io/inject": "true"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 40,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "securityContext": RESTRICTED,
                            "env": [
                                {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": bootstrap},
                                {"name": "APP_TOPIC", "value": topic},
                                {"name": "APP_WORKERS", "value": str(workers)},
                                {"name": "APP_RATE", "value": str(rate)},
                                {
                                    "name": "APP_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }
