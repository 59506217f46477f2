"""What a pod carries of ours: the ``kafka-sidecar.io/status`` record and the sidecar container.

One reader for each, tolerant of any shape (pods are written by their authors): the webhook, the
status reconciler and the kubectl plugin all ask here.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka_sidecar_operator.names import INJECTED_LABEL, SIDECAR_NAME, STATUS_ANNOTATION


@dataclass(frozen=True)
class StatusRecord:
    """The webhook's decision as recorded on the pod."""

    decision: str = ""
    reason: str = ""
    message: str = ""
    policy: str | None = None
    image: str | None = None
    bucket: float | None = None

    @property
    def injected(self) -> bool:
        return self.decision == "injected"

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> StatusRecord | None:
        """The pod's record; None when it has none or it is not a record we could have written."""
        metadata = pod.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        raw = annotations.get(STATUS_ANNOTATION) if isinstance(annotations, Mapping) else None
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: object) -> StatusRecord | None:
        if not isinstance(raw, str):
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        bucket = data.get("bucket")
        policy, image = data.get("policy"), data.get("image")
        return cls(
            decision=str(data.get("decision") or ""),
            reason=str(data.get("reason") or ""),
            message=str(data.get("message") or ""),
            policy=policy if isinstance(policy, str) else None,
            image=image if isinstance(image, str) else None,
            bucket=float(bucket)
            if isinstance(bucket, (int, float))
            and not isinstance(bucket, bool)
            and math.isfinite(bucket)
            else None,
        )


def containers_of(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Init containers then containers, skipping anything that is not a container object."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return []
    found: list[Mapping[str, Any]] = []
    for key in ("initContainers", "containers"):
        entries = spec.get(key)
        if isinstance(entries, list):
            found.extend(c for c in entries if isinstance(c, Mapping))
    return found


def sidecar_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container named like ours, wherever it is: the one place that decides "has it"."""
    return next((c for c in containers_of(pod) if c.get("name") == SIDECAR_NAME), None)


def ours(pod: Mapping[str, Any]) -> tuple[object, object]:
    """The pod's status record and injected label, as raw values (None when absent)."""
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    annotations = metadata.get("annotations")
    labels = metadata.get("labels")
    return (
        annotations.get(STATUS_ANNOTATION) if isinstance(annotations, Mapping) else None,
        labels.get(INJECTED_LABEL) if isinstance(labels, Mapping) else None,
    )


def kept_record(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """``new`` with the record and label ``old`` had (or without them if it had none), or None
    when an update leaves them as they were: after creation they are the webhook's alone."""
    if ours(old) == ours(new):
        return None
    record, label = ours(old)
    result: dict[str, Any] = copy.deepcopy(dict(new))
    metadata = result["metadata"] = dict(result.get("metadata") or {})
    for key, name, value in (
        ("annotations", STATUS_ANNOTATION, record),
        ("labels", INJECTED_LABEL, label),
    ):
        entries = dict(metadata.get(key) or {})
        entries.pop(name, None)
        if value is not None:
            entries[name] = value
        metadata[key] = entries
    return result
