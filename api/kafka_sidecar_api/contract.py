"""The wire contract outside the .proto: names and defaults client, sidecar and operator share.

Written once here and imported everywhere, so a socket path or header name cannot drift apart
between the process that sets it and the one that reads it.
"""

from __future__ import annotations

import math

SOCKET_DIR = "/var/run/kafka-sidecar"
"""Where the pod's shared emptyDir holds the sidecar's socket."""

SOCKET_ADDRESS = f"unix://{SOCKET_DIR}/sidecar.sock"
"""The sidecar's default gRPC address (KAFKA_SIDECAR_LISTEN / KAFKA_SIDECAR_ADDRESS)."""

ID_HEADER = "kafka-sidecar-id"
"""The record header ``<client_id>:<sequence>`` the sidecar and the direct fallback both set."""

HEALTH_SERVICE = "kafka_sidecar.v1.ProducerSidecar"
"""The gRPC health service name a client probes (the proto's service)."""

CLIENT_OUTCOMES = ("attempts", "acked", "failed", "fallback", "resent")
"""What clients count per topic, in ``TopicCounters`` field order; the ``outcome`` label."""

PRODUCER_ENV_PREFIX = "KAFKA_PRODUCER_"
"""The sidecar's librdkafka settings: ``KAFKA_PRODUCER_<PROPERTY>``, dots as underscores."""

METRICS_PORT = 9464
"""The sidecar's /metrics, /healthz and /readyz port."""

DEFAULT_METRICS_ADDR = f"0.0.0.0:{METRICS_PORT}"


def producer_env_name(prop: str) -> str:
    """librdkafka property → its ``KAFKA_PRODUCER_*`` variable (``linger.ms`` → ``_LINGER_MS``)."""
    return PRODUCER_ENV_PREFIX + prop.upper().replace(".", "_")


def producer_property(env_name: str) -> str | None:
    """``KAFKA_PRODUCER_*`` variable → its librdkafka property; None for other variables."""
    if not env_name.startswith(PRODUCER_ENV_PREFIX) or len(env_name) == len(PRODUCER_ENV_PREFIX):
        return None
    return env_name[len(PRODUCER_ENV_PREFIX) :].lower().replace("_", ".")


def positive_int(raw: str, name: str, error: type[ValueError] = ValueError) -> int:
    """An environment value that must be an integer > 0; ``error`` names ``name``."""
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise error(f"{name} must be a positive integer, got {raw!r}")
    return value


def number(
    raw: str, name: str, unit: str, error: type[ValueError] = ValueError, zero: bool = False
) -> float:
    """A finite number of ``unit`` > 0 (``zero``: >= 0); ``error`` names ``name``."""
    wanted = f"a number of {unit} >= 0" if zero else f"a positive number of {unit}"
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name} must be {wanted}, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise error(f"{name} must be {wanted}, got {raw!r}")
    return value
