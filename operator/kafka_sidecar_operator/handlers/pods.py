"""kopf's pod index: the opted-in and decided pods, by namespace, for the policies' status."""

from __future__ import annotations

from typing import Any

import kopf

from kafka_sidecar_operator.conditions import PodView
from kafka_sidecar_operator.names import INJECT_ANNOTATION, STATUS_ANNOTATION


@kopf.index("pods")
def pods_by_namespace(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, PodView] | None:
    """Opted-in and decided pods only: policy status never needs the others."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    if INJECT_ANNOTATION not in annotations and STATUS_ANNOTATION not in annotations:
        return None
    return {namespace or "": PodView.from_body(body)}
