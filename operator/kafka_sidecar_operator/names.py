"""The names users see: annotations, labels, the CRD, env flags, the sidecar's shape."""

from __future__ import annotations

from kafka_sidecar_api.contract import SOCKET_ADDRESS

DOMAIN = "kafka-sidecar.io"
INJECT_ANNOTATION = f"{DOMAIN}/inject"
STATUS_ANNOTATION = f"{DOMAIN}/status"
NAMESPACE_LABEL = f"{DOMAIN}/injection"
INJECTED_LABEL = f"{DOMAIN}/injected"
NAMESPACE_LABEL_VALUE = "enabled"

GROUP = DOMAIN
VERSION = "v1alpha1"
PLURAL = "kafkasidecarpolicies"

SIDECAR_NAME = "kafka-sidecar"
SOCKET_VOLUME = "kafka-sidecar-socket"
METRICS_PORT_NAME = "ks-metrics"
# An empty volume mounted over the service-account token path in the sidecar: the sidecar needs
# no API access, and with a mount already at that path no token is projected into it.
NO_TOKEN_VOLUME = "kafka-sidecar-no-token"  # noqa: S105 - a volume name
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path

# Injected into every app container.
APP_ENV = {
    "KAFKA_SIDECAR_MODE": "sidecar",
    "KAFKA_SIDECAR_ADDRESS": SOCKET_ADDRESS,
    "KAFKA_SIDECAR_FALLBACK": "direct",
}
