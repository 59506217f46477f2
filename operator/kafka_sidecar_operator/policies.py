"""KafkaSidecarPolicy objects as the webhook and reconcilers see them: matching and precedence.

Pure functions over plain dicts (the bodies kopf and the API server give us).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka_sidecar_operator.rollout import Granularity


@dataclass(frozen=True)
class Policy:
    """The parts of a KafkaSidecarPolicy the operator acts on, with the CRD's defaults applied."""

    namespace: str
    name: str
    created: str
    selector: Mapping[str, Any]
    percentage: int
    granularity: Granularity
    paused: bool
    sidecar: Mapping[str, Any]
    alert_max_ratio: float
    alert_window: str
    alert_sustained_for: str
    auto_pause: bool
    alerting: bool = False
    generation: int = 0
    uid: str = ""
    status: Mapping[str, Any] = field(default_factory=dict)
    """The status last written (conditions keep their transition times; alert state restored)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def injecting(self) -> bool:
        """False while paused, or auto-paused by a firing fallback alert."""
        return not self.paused and not (self.auto_pause and self.alerting)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Policy:
        metadata = body.get("metadata", {})
        spec = body.get("spec", {})
        rollout = spec.get("rollout") or {}
        fallback = spec.get("fallback") or {}
        alert = fallback.get("alert") or {}
        status = body.get("status") or {}
        return cls(
            namespace=metadata.get("namespace", ""),
            name=metadata.get("name", ""),
            created=metadata.get("creationTimestamp", ""),
            selector=spec.get("selector") or {},
            percentage=int(rollout.get("percentage", 100)),
            granularity="pod" if rollout.get("granularity") == "pod" else "workload",
            paused=bool(spec.get("paused", False)),
            sidecar=spec.get("sidecar") or {},
            alert_max_ratio=float(alert.get("maxRatio", 0.05)),
            alert_window=str(alert.get("window", "5m")),
            alert_sustained_for=str(alert.get("sustainedFor", "2m")),
            auto_pause=bool(fallback.get("autoPause", False)),
            alerting=status.get("alertState") == "Firing",
            generation=int(metadata.get("generation", 0)),
            uid=metadata.get("uid", ""),
            status=status if isinstance(status, Mapping) else {},
        )


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def matching(policies: Iterable[Policy], namespace: str, labels: Mapping[str, str]) -> list[Policy]:
    """Policies of ``namespace`` selecting a pod with ``labels``, in precedence order.

    Precedence is deterministic: the oldest policy first, then by name. Every other match is an
    overlap the losing policies report in their status.
    """
    found = [
        p for p in policies if p.namespace == namespace and selector_matches(p.selector, labels)
    ]
    return sorted(found, key=lambda p: (p.created, p.name))
