"""Self-managed webhook TLS (the install without cert-manager).

The CA and serving certificate live in one Secret shared by all replicas; the first replica to
start creates it, the others read it. Each replica writes the files kopf's webhook server serves
(it reloads them when they change) and keeps the MutatingWebhookConfiguration's caBundle current.
A certificate is renewed when less than a third of its lifetime is left.
"""

from __future__ import annotations

import base64
import datetime
import logging
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_operator.certificates import CertificateAuthority

log = logging.getLogger(__name__)
SECRET_NAME = "kafka-sidecar-webhook-tls"  # noqa: S105 - a Secret's name, not a password
SERVICE_NAME = "kafka-sidecar-webhook"


def needs_renewal(cert_pem: bytes, now: datetime.datetime | None = None) -> bool:
    """True when less than a third of the certificate's lifetime is left."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    now = now or datetime.datetime.now(datetime.UTC)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < lifetime / 3


def issue(namespace: str) -> dict[str, bytes]:
    """A new CA and a serving certificate for the webhook Service's DNS names."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = CertificateAuthority.create(directory, "kafka-sidecar-webhook-ca")
        hosts = (f"{SERVICE_NAME}.{namespace}.svc", f"{SERVICE_NAME}.{namespace}.svc.cluster.local")
        pair = ca.issue(directory, "tls", common_name=hosts[0], hosts=hosts)
        return {
            "tls.crt": pair.cert.read_bytes(),
            "tls.key": pair.key.read_bytes(),
            "ca.crt": ca.pair.cert.read_bytes(),
        }


def ensure(api: k8s.ApiClient, namespace: str, cert_dir: Path, webhook_name: str) -> None:
    """Make sure a valid certificate exists, is served, and is trusted by the API server."""
    core = k8s.CoreV1Api(api)
    data = _read(core, namespace)
    if data is None or needs_renewal(data["tls.crt"]):
        data = issue(namespace)
        _write(core, namespace, data)
        log.info("Issued a new webhook certificate in Secret %s/%s", namespace, SECRET_NAME)
        data = _read(core, namespace) or data  # another replica may have won the race
    cert_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        target = cert_dir / name
        if not target.exists() or target.read_bytes() != data[name]:
            target.write_bytes(data[name])
    patch: Any = {
        "webhooks": [
            {
                "name": "inject-sidecar.kafka-sidecar.io",
                "clientConfig": {"caBundle": base64.b64encode(data["ca.crt"]).decode()},
            }
        ]
    }
    k8s.AdmissionregistrationV1Api(api).patch_mutating_webhook_configuration(webhook_name, patch)


def _read(core: k8s.CoreV1Api, namespace: str) -> dict[str, bytes] | None:
    try:
        secret = core.read_namespaced_secret(SECRET_NAME, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    raw = secret.data or {}
    if not all(k in raw for k in ("tls.crt", "tls.key", "ca.crt")):
        return None
    return {k: base64.b64decode(raw[k]) for k in ("tls.crt", "tls.key", "ca.crt")}


def _write(core: k8s.CoreV1Api, namespace: str, data: dict[str, bytes]) -> None:
    body: Any = {
        "metadata": {"name": SECRET_NAME, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_secret(SECRET_NAME, namespace, body)
