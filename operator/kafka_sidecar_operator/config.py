"""The operator's configuration: a frozen dataclass from ``KAFKA_SIDECAR_OPERATOR_*`` variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kafka_sidecar_api.contract import number

DEFAULT_IMAGE = "ghcr.io/kafka-sidecar/kafka-sidecar:0.1.0"


class OperatorConfigError(ValueError):
    """A setting users must fix; the message names the variable."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything ``kafka-sidecar-operator run`` is configured with."""

    namespace: str = "kafka-sidecar-system"
    """``KAFKA_SIDECAR_OPERATOR_NAMESPACE``: where the operator runs; never injected."""

    watch_namespaces: tuple[str, ...] = ()
    """``KAFKA_SIDECAR_OPERATOR_WATCH_NAMESPACES``: comma-separated; empty watches all."""

    default_image: str = DEFAULT_IMAGE
    """``KAFKA_SIDECAR_OPERATOR_SIDECAR_IMAGE``: the sidecar image when a policy names none."""

    webhook_host: str = "0.0.0.0"  # noqa: S104 - the API server calls the webhook from outside
    """``KAFKA_SIDECAR_OPERATOR_WEBHOOK_HOST``: the address the webhook server listens on."""

    webhook_port: int = 9443
    """``KAFKA_SIDECAR_OPERATOR_WEBHOOK_PORT``: the webhook's HTTPS port."""

    cert_dir: Path = Path("/tmp/k8s-webhook-server/serving-certs")
    """``KAFKA_SIDECAR_OPERATOR_CERT_DIR``: tls.crt, tls.key (and ca.crt) of the webhook."""

    webhook_name: str = "kafka-sidecar-injector"
    """``KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME``: the MutatingWebhookConfiguration's name."""

    metrics_port: int = 8080
    """``KAFKA_SIDECAR_OPERATOR_METRICS_PORT``: /metrics and /healthz; 0 turns it off."""

    health_port: int = 8081
    """``KAFKA_SIDECAR_OPERATOR_HEALTH_PORT``: /healthz (alive) and /readyz (every policy listed);
    0 turns it off."""

    fallback_interval: float = 15.0
    """``KAFKA_SIDECAR_OPERATOR_FALLBACK_INTERVAL``: seconds between fallback scrapes per policy."""

    tls: str = "files"
    """``KAFKA_SIDECAR_OPERATOR_TLS``: ``files`` (cert-manager or another tool writes CERT_DIR) or
    ``self-managed`` (the operator keeps its own CA in a Secret and patches the caBundle)."""

    peering: str = ""
    """``KAFKA_SIDECAR_OPERATOR_PEERING``: the ClusterKopfPeering replicas coordinate through;
    empty runs standalone (one replica)."""

    identity: str = ""
    """``KAFKA_SIDECAR_OPERATOR_IDENTITY``: this replica's name among its kopf peers (the manifests
    set the pod's name); empty uses the host name and process id. kopf's own default asks the
    password database for the user, which a container's UID 65532 is not in."""

    excluded_namespaces: tuple[str, ...] = ("kube-system",)
    """Never injected, besides the operator's own namespace."""

    @property
    def never_injected(self) -> tuple[str, ...]:
        return (*self.excluded_namespaces, self.namespace)

    def peering_identity(self, hostname: str, pid: int) -> str:
        """The name kopf peering knows this replica by: never derived from the user's name."""
        return self.identity or f"{hostname or 'kafka-sidecar-operator'}/{pid}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        prefix = "KAFKA_SIDECAR_OPERATOR_"
        watch = env.get(f"{prefix}WATCH_NAMESPACES", "")
        tls = env.get(f"{prefix}TLS", "files") or "files"
        if tls not in ("files", "self-managed"):
            raise OperatorConfigError(f"{prefix}TLS must be files or self-managed, got {tls!r}")
        return cls(
            namespace=env.get(f"{prefix}NAMESPACE", cls.namespace) or cls.namespace,
            watch_namespaces=tuple(n.strip() for n in watch.split(",") if n.strip()),
            default_image=env.get(f"{prefix}SIDECAR_IMAGE", DEFAULT_IMAGE) or DEFAULT_IMAGE,
            webhook_host=env.get(f"{prefix}WEBHOOK_HOST", cls.webhook_host),
            webhook_port=_port(env, f"{prefix}WEBHOOK_PORT", cls.webhook_port),
            cert_dir=Path(env.get(f"{prefix}CERT_DIR", str(cls.cert_dir))),
            webhook_name=env.get(f"{prefix}WEBHOOK_NAME", cls.webhook_name) or cls.webhook_name,
            metrics_port=_port(env, f"{prefix}METRICS_PORT", cls.metrics_port, allow_zero=True),
            tls=tls,
            peering=env.get(f"{prefix}PEERING", ""),
            identity=env.get(f"{prefix}IDENTITY", "").strip(),
            health_port=_port(env, f"{prefix}HEALTH_PORT", cls.health_port, allow_zero=True),
            fallback_interval=_seconds(env, f"{prefix}FALLBACK_INTERVAL", cls.fallback_interval),
        )


def _port(env: Mapping[str, str], name: str, default: int, allow_zero: bool = False) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    low = 0 if allow_zero else 1
    if not raw.isdigit() or not low <= int(raw) <= 65535:
        raise OperatorConfigError(f"{name} must be a port {low}-65535, got {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return number(raw, name, "seconds", OperatorConfigError)
