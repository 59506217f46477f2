"""The rollout decision: a deterministic bucket per pod or workload, compared to the percentage.

A bucket depends only on the policy's identity and the pod's (or its owner's), so the same pod
always gets the same answer and raising the percentage only ever adds buckets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

Granularity = Literal["pod", "workload"]


def bucket(salt: str, identity: str) -> float:
    """A stable number in [0, 100) with two decimals."""
    digest = hashlib.sha256(f"{salt}\x00{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100


def selected(bucket_value: float, percentage: int) -> bool:
    return bucket_value < percentage


def workload_identity(pod: Mapping[str, Any]) -> str | None:
    """The owning workload as kind/name; a ReplicaSet stands for its Deployment.

    The ReplicaSet's name changes with every Deployment revision (its pod-template-hash suffix),
    so the hash suffix is dropped: a Deployment stays in or out across rollouts.
    """
    metadata = pod.get("metadata", {})
    owners = metadata.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return None
    kind, name = owner.get("kind", ""), owner.get("name", "")
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return f"Deployment/{name[: -len(template_hash) - 1]}"
    return f"{kind}/{name}"


def pod_identity(pod: Mapping[str, Any], request_uid: str) -> str:
    """The pod's own name; a pod created with generateName has none yet at admission, so the
    admission request's uid stands in (the bucket is recorded on the pod either way)."""
    metadata = pod.get("metadata", {})
    return str(metadata.get("name") or f"{metadata.get('generateName', '')}{request_uid}")


def identity_for(pod: Mapping[str, Any], granularity: Granularity, request_uid: str) -> str:
    if granularity == "workload":
        workload = workload_identity(pod)
        if workload is not None:
            return workload
    return pod_identity(pod, request_uid)
