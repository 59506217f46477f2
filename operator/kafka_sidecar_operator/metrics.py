"""The operator's Prometheus metrics (``kafka_sidecar_operator_*``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

INJECTIONS = Counter(
    "kafka_sidecar_operator_injections",
    "Webhook decisions by result (injected, skipped) and reason",
    ["result", "reason"],
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "kafka_sidecar_operator_webhook_duration_seconds",
    "Time the injection webhook spent deciding and building the patch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
    registry=REGISTRY,
)
RECONCILES = Counter(
    "kafka_sidecar_operator_reconciles",
    "Policy status reconciliations by outcome (ok, error)",
    ["outcome"],
    registry=REGISTRY,
)
FALLBACK_SCRAPES = Counter(
    "kafka_sidecar_operator_fallback_scrapes",
    "Sidecar metrics scrapes for fallback alerts by outcome (ok, unreachable)",
    ["outcome"],
    registry=REGISTRY,
)


# The webhook answers in a child process (handlers/webhook_process.py); its observations are
# forwarded to this process's metrics, which /metrics serves.
WebhookObservation = tuple[str, str, str] | tuple[str, float]
Send = Callable[[WebhookObservation], None]
_forward: list[Send] = []


def forward_to(send: Send) -> None:
    """In the webhook's process: send each observation instead of counting it here."""
    _forward[:] = [send]


def count_injection(result: str, reason: str) -> None:
    """A webhook decision (``kafka_sidecar_operator_injections_total``)."""
    if _forward:
        _forward[0](("injection", result, reason))
    else:
        INJECTIONS.labels(result, reason).inc()


def observe_webhook_seconds(seconds: float) -> None:
    """The time a decision took (``kafka_sidecar_operator_webhook_duration_seconds``)."""
    if _forward:
        _forward[0](("latency", seconds))
    else:
        WEBHOOK_LATENCY.observe(seconds)


def apply(observation: WebhookObservation) -> None:
    """Count a forwarded observation here."""
    if observation[0] == "injection" and len(observation) == 3:
        count_injection(observation[1], observation[2])
    elif observation[0] == "latency" and len(observation) == 2:
        observe_webhook_seconds(float(observation[1]))
