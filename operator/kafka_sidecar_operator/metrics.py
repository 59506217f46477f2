"""The operator's Prometheus metrics (``kafka_sidecar_operator_*``)."""

from __future__ import annotations

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
