"""The injection webhook's registration (the MutatingWebhookConfiguration and its TLS) and its
wire format (AdmissionReview v1 answers with a JSON patch).

In a cluster the manifests own the configuration (with cert-manager or the operator's own CA);
``--local`` makes a CA and serving certificate for 127.0.0.1 and registers the webhook itself,
removing it on exit. kopf's managed configuration is not used: it cannot set a
namespaceSelector, a reinvocationPolicy or a short timeout.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka_sidecar_operator.certificates import CertificateAuthority, KeyPair
from kafka_sidecar_operator.names import DOMAIN, NAMESPACE_LABEL, NAMESPACE_LABEL_VALUE

HANDLER_ID = "inject-sidecar"
RECORD_HANDLER_ID = "keep-record"
TIMEOUT_SECONDS = 5


class InvalidReview(ValueError):
    """A body that is not an AdmissionReview with a request (answered 400 Bad Request)."""


def webhook_configuration(
    name: str, client_config: dict[str, Any], never_injected: tuple[str, ...]
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration body: the scope and failure semantics of injection.

    ``client_config`` reaches the injection handler; the record keeper's differs only in path.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kafka-sidecar"}},
        "webhooks": [
            _webhook(HANDLER_ID, "CREATE", client_config, never_injected),
            # Pods may change their own annotations and labels after creation: this one puts
            # back the record and label the injection handler wrote.
            _webhook(
                RECORD_HANDLER_ID,
                "UPDATE",
                client_config_for(client_config, RECORD_HANDLER_ID),
                never_injected,
            ),
        ],
    }


def client_config_for(base: dict[str, Any], handler_id: str) -> dict[str, Any]:
    """The same server (URL or Service, and CA) at another handler's path."""
    config = dict(base)
    if "url" in config:
        config["url"] = f"{config['url'].rsplit('/', 1)[0]}/{handler_id}"
    if "service" in config:
        config["service"] = {**config["service"], "path": f"/{handler_id}"}
    return config


def _webhook(
    handler_id: str, operation: str, client_config: dict[str, Any], never_injected: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "name": f"{handler_id}.{DOMAIN}",
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": [operation],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": NAMESPACE_LABEL,
                    "operator": "In",
                    "values": [NAMESPACE_LABEL_VALUE],
                },
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": list(never_injected),
                },
            ]
        },
        # Pod creation must never depend on the operator: if it is down, pods start as they
        # are (the status annotation is then missing, which `explain` reports).
        "failurePolicy": "Ignore",
        # Events for skipped pods, never on a dry run.
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": TIMEOUT_SECONDS,
        # Called once per pod: whatever of ours a pod already carries (status record,
        # injected label, a sidecar container) its author wrote, and is not trusted.
        "reinvocationPolicy": "Never",
        "matchPolicy": "Equivalent",
        "admissionReviewVersions": ["v1"],
    }


def pin_namespace(review: dict[str, Any]) -> None:
    """Decide for the namespace the request names, never one the object claims.

    The API server sets both to the same value; an AdmissionReview made by anything else may
    not, and must not get the policy configuration of the namespace its object names.
    """
    request = review.get("request")
    if not isinstance(request, dict):
        return
    target = request.get("object")
    if isinstance(target, dict):
        metadata = target.get("metadata")
        metadata = target["metadata"] = dict(metadata) if isinstance(metadata, dict) else {}
        metadata["namespace"] = str(request.get("namespace") or "")


def review_request(review: object) -> dict[str, Any]:
    """The ``request`` of an AdmissionReview, or InvalidReview."""
    if not isinstance(review, dict):
        raise InvalidReview("not a JSON object")
    request = review.get("request")
    if not isinstance(request, dict):
        raise InvalidReview("an AdmissionReview without a request")
    return request


def admission_response(
    review: Mapping[str, Any], patch: Sequence[Mapping[str, Any]], warnings: Sequence[str] = ()
) -> dict[str, Any]:
    """The answer to ``review``: always allowed (the webhook fails open, never denies), with
    the JSON patch base64-encoded when there is one, and the warnings."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    if warnings:
        response["warnings"] = [str(warning) for warning in warnings]
    if patch:
        response["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode("ascii")
        response["patchType"] = "JSONPatch"
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": response,
    }


def json_patch(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``before`` into ``after``: objects are compared key by key,
    a list or value that differs is replaced whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        ops: list[dict[str, Any]] = []
        for key in before:
            if key not in after:
                ops.append({"op": "remove", "path": f"{path}/{_pointer(key)}"})
        for key, value in after.items():
            where = f"{path}/{_pointer(key)}"
            if key not in before:
                ops.append({"op": "add", "path": where, "value": value})
            else:
                ops.extend(json_patch(before[key], value, where))
        return ops
    if before == after and type(before) is type(after):
        return []
    return [{"op": "replace", "path": path, "value": after}]


def _pointer(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def local_certificates(directory: Path) -> tuple[KeyPair, bytes]:
    """A CA and a serving certificate for 127.0.0.1; returns the pair and the CA bundle."""
    ca = CertificateAuthority.create(directory, "kafka-sidecar-webhook-ca")
    serving = ca.issue(
        directory, "tls", common_name="kafka-sidecar-webhook", hosts=("127.0.0.1", "localhost")
    )
    return serving, ca.pair.cert.read_bytes()


def url_client_config(host: str, port: int, ca_bundle: bytes) -> dict[str, Any]:
    return {
        "url": f"https://{host}:{port}/{HANDLER_ID}",
        "caBundle": base64.b64encode(ca_bundle).decode(),
    }
