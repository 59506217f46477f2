"""Self-managed webhook TLS (the install without cert-manager): the Secret, the files, the caBundle.

The CA, the serving certificate and the trust bundle live in one Secret shared by all replicas
(``rotation.plan`` decides what it should hold). Writes carry the resourceVersion they were
planned from: when two replicas race, one write fails with a conflict and that replica adopts
what the other stored, never replacing it. Each replica writes the files kopf's webhook server
serves (it reloads them when they change) and keeps the MutatingWebhookConfiguration's caBundle
equal to the bundle.
"""

from __future__ import annotations

import base64
import datetime
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_operator import rotation
from kafka_sidecar_operator.rotation import TlsMaterial

log = logging.getLogger(__name__)
SECRET_NAME = "kafka-sidecar-webhook-tls"  # noqa: S105 - a Secret's name, not a password
SERVICE_NAME = "kafka-sidecar-webhook"
WEBHOOKS = ("inject-sidecar.kafka-sidecar.io", "keep-record.kafka-sidecar.io")
ATTEMPTS = 5


def hosts_for(namespace: str) -> tuple[str, ...]:
    return (f"{SERVICE_NAME}.{namespace}.svc", f"{SERVICE_NAME}.{namespace}.svc.cluster.local")


def needs_renewal(cert_pem: bytes, now: datetime.datetime | None = None) -> bool:
    """True when less than a third of the certificate's lifetime is left."""
    return rotation.needs_renewal(cert_pem, now or datetime.datetime.now(datetime.UTC))


def issue(namespace: str) -> dict[str, bytes]:
    """Fresh material (a new CA and a serving certificate) as Secret data."""
    fresh = rotation.plan(None, hosts_for(namespace), datetime.datetime.now(datetime.UTC))
    assert fresh is not None
    return fresh.as_secret_data()


def ensure(
    api: k8s.ApiClient,
    namespace: str,
    cert_dir: Path,
    webhook_name: str,
    now: datetime.datetime | None = None,
) -> TlsMaterial:
    """Make sure valid material is stored, served from ``cert_dir`` and trusted."""
    core = k8s.CoreV1Api(api)
    admission = k8s.AdmissionregistrationV1Api(api)
    for _ in range(ATTEMPTS):
        stored, version, raw = read(core, namespace)
        next_material = rotation.plan(
            stored,
            hosts_for(namespace),
            now or datetime.datetime.now(datetime.UTC),
            previous_bundle=raw.get("ca.crt", b"") if stored is None else b"",
        )
        if next_material is None:
            assert stored is not None
            material = stored
            break
        try:
            store(core, namespace, next_material, version)
        except ApiException as error:
            if error.status != 409:
                raise
            log.info("Another replica renewed the webhook certificate first; using theirs")
            continue
        log.info("Stored a new webhook certificate in Secret %s/%s", namespace, SECRET_NAME)
        material = next_material
        break
    else:
        raise RuntimeError(f"Secret {namespace}/{SECRET_NAME} kept changing; retrying later")
    serve(material, cert_dir)
    trust(admission, webhook_name, material.bundle)
    return material


def read(
    core: k8s.CoreV1Api, namespace: str
) -> tuple[TlsMaterial | None, str | None, dict[str, bytes]]:
    """The stored material (None if absent or of an older format), its resourceVersion, raw data."""
    try:
        secret = core.read_namespaced_secret(SECRET_NAME, namespace)
    except ApiException as error:
        if error.status == 404:
            return None, None, {}
        raise
    raw = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
    version = secret.metadata.resource_version if secret.metadata else None
    return TlsMaterial.from_secret_data(raw), version, raw


def store(core: k8s.CoreV1Api, namespace: str, material: TlsMaterial, version: str | None) -> None:
    """Create, or replace exactly the version planned from; a conflict raises 409."""
    metadata: dict[str, Any] = {"name": SECRET_NAME, "namespace": namespace}
    if version is not None:
        metadata["resourceVersion"] = version
    body: Any = {
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in material.as_secret_data().items()},
    }
    if version is None:
        core.create_namespaced_secret(namespace, body)
    else:
        core.replace_namespaced_secret(SECRET_NAME, namespace, body)


def serve(material: TlsMaterial, cert_dir: Path) -> None:
    """Write the files the webhook server serves, only those that changed (it reloads them)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = {"tls.crt": material.cert, "tls.key": material.key, "ca.crt": material.bundle}
    for name, content in files.items():
        target = cert_dir / name
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)


def trust(admission: k8s.AdmissionregistrationV1Api, webhook_name: str, bundle: bytes) -> None:
    """Set the webhook's caBundle to the bundle, unless it already is."""
    encoded = base64.b64encode(bundle).decode()
    current = admission.read_mutating_webhook_configuration(webhook_name)
    present = [h for h in current.webhooks or [] if h.name in WEBHOOKS]
    if present and all(h.client_config.ca_bundle == encoded for h in present):
        return
    patch: Any = {
        "webhooks": [{"name": h.name, "clientConfig": {"caBundle": encoded}} for h in present]
    }
    admission.patch_mutating_webhook_configuration(webhook_name, patch)


def bundle_subjects(bundle: bytes) -> list[str]:
    """The CAs a bundle trusts, for logs and tests."""
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(bundle)]
