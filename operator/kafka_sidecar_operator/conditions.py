"""A policy's status from the pods it selects: counts, percentages, connections and conditions.

Pure: the reconciler feeds it the pod index and the fallback state and writes what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka_sidecar_operator.connections import ConnectionCount
from kafka_sidecar_operator.names import INJECT_ANNOTATION, METRICS_PORT_NAME, SIDECAR_NAME
from kafka_sidecar_operator.pod_record import StatusRecord, sidecar_of
from kafka_sidecar_operator.policies import Policy, matching
from kafka_sidecar_operator.rollout import selected


@dataclass(frozen=True)
class PodView:
    """What the operator indexes of each pod: enough for status and fallback, nothing more."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    opted_in: bool
    status: StatusRecord
    ip: str | None
    metrics_port: int | None
    sidecar_ready: bool
    running: bool = False
    has_sidecar: bool = False
    host_network: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        metadata = body.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        spec = body.get("spec") or {}
        sidecar = sidecar_of(body)
        port = None
        for entry in (sidecar or {}).get("ports") or []:
            if isinstance(entry, Mapping) and entry.get("name") == METRICS_PORT_NAME:
                value = entry.get("containerPort")
                port = value if isinstance(value, int) else None
        pod_status = body.get("status") or {}
        statuses = [
            *(pod_status.get("initContainerStatuses") or []),
            *(pod_status.get("containerStatuses") or []),
        ]
        ready = any(s.get("name") == SIDECAR_NAME and s.get("ready") for s in statuses)
        return cls(
            namespace=metadata.get("namespace", ""),
            name=metadata.get("name", ""),
            labels=metadata.get("labels") or {},
            opted_in=str(annotations.get(INJECT_ANNOTATION, "")).strip().lower() == "true",
            status=StatusRecord.of(body) or StatusRecord(),
            ip=pod_status.get("podIP"),
            metrics_port=port,
            sidecar_ready=ready,
            running=pod_status.get("phase") == "Running",
            has_sidecar=sidecar is not None,
            host_network=bool(spec.get("hostNetwork")),
        )

    @property
    def injected(self) -> bool:
        """Recorded as injected by the webhook and carrying the sidecar: both, never one."""
        return self.status.injected and self.has_sidecar

    def scrapable_for(self, policy_key: str) -> bool:
        """A pod whose sidecar the fallback scrape may call: one the operator injected for this
        policy, running, and never on the node's network (its address would be the node's)."""
        return (
            self.injected
            and self.status.policy == policy_key
            and self.running
            and not self.host_network
        )


@dataclass(frozen=True)
class Counts:
    matched: int
    injected: int
    pending: int
    overlapping: tuple[str, ...]

    @property
    def actual_percentage(self) -> float:
        return 100.0 * self.injected / self.matched if self.matched else 0.0


def count(policy: Policy, policies: Iterable[Policy], pods: Iterable[PodView]) -> Counts:
    """Pods this policy governs (it wins precedence for them), how many carry the sidecar, and
    how many were decided differently from what the current spec would decide (pending)."""
    return count_all(policies, pods).get(policy.key, Counts(0, 0, 0, ()))


def count_all(policies: Iterable[Policy], pods: Iterable[PodView]) -> dict[str, Counts]:
    """``count`` for every policy at once: one pass over the pods, each matched once.

    Selectors are checked once per distinct set of labels (the pods of one ReplicaSet share
    theirs), not once per pod: per namespace and round this is label sets x policies selector
    checks, not pods x policies (or pods x policies² counting each policy on its own).
    """
    all_policies = list(policies)
    tallies = {p.key: [0, 0, 0] for p in all_policies}
    overlaps: dict[str, set[str]] = {p.key: set() for p in all_policies}
    matched: dict[tuple[str, frozenset[tuple[str, str]]], list[Policy]] = {}
    for pod in pods:
        if not pod.opted_in:
            continue
        labels = (pod.namespace, frozenset(pod.labels.items()))
        candidates = matched.get(labels)
        if candidates is None:
            candidates = matched[labels] = matching(all_policies, pod.namespace, pod.labels)
        if not candidates:
            continue
        keys = [p.key for p in candidates]
        if len(keys) > 1:
            for key in keys:
                overlaps[key].update(k for k in keys if k != key)
        winner = candidates[0]
        tally = tallies[winner.key]
        tally[0] += 1
        if pod.injected:
            tally[1] += 1
        bucket = pod.status.bucket
        if bucket is None and not pod.injected:
            tally[2] += 1  # created before the policy could decide
        elif (
            bucket is not None
            and winner.injecting
            and (selected(bucket, winner.percentage) != pod.injected)
        ):
            tally[2] += 1
    return {
        key: Counts(matched, injected, pending, tuple(sorted(overlaps[key])))
        for key, (matched, injected, pending) in tallies.items()
    }


def condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """A condition; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = next((c for c in previous if c.get("type") == kind), None)
    since = old.get("lastTransitionTime", now) if old and old.get("status") == value else now
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def build_status(
    policy: Policy,
    counts: Counts,
    fallback_ratio: float | None,
    alert_state: str,
    previous: Iterable[Mapping[str, Any]],
    connections: ConnectionCount | None = None,
) -> dict[str, Any]:
    """The whole ``status`` block (what ``kubectl get ksp`` and ``describe`` show).

    ``connections`` is the last scrape's count; none yet (or no sidecar scraped) is zeros.
    """
    previous = list(previous)
    if policy.paused:
        progressing = condition(
            "RolloutProgressing",
            False,
            "Paused",
            "spec.paused is true: no new pods are injected",
            policy.generation,
            previous,
        )
    elif not policy.injecting:
        progressing = condition(
            "RolloutProgressing",
            False,
            "AutoPaused",
            "the fallback alert fires and fallback.autoPause is true",
            policy.generation,
            previous,
        )
    elif counts.pending:
        progressing = condition(
            "RolloutProgressing",
            True,
            "PodsAwaitingRecreation",
            f"{counts.pending} pod(s) were admitted under another decision; they follow "
            f"rollout.percentage={policy.percentage} when recreated",
            policy.generation,
            previous,
        )
    else:
        progressing = condition(
            "RolloutProgressing",
            False,
            "RolloutComplete",
            f"every matched pod follows rollout.percentage={policy.percentage}",
            policy.generation,
            previous,
        )
    firing = alert_state == "Firing"
    ratio_text = "-" if fallback_ratio is None else f"{fallback_ratio:.1%}"
    alert = condition(
        "FallbackAlert",
        firing,
        {"Firing": "FallbackRatioHigh", "Pending": "FallbackRatioRising"}.get(
            alert_state, "FallbackRatioOk"
        ),
        f"fallback ratio {ratio_text} over {policy.alert_window} "
        f"(alert above {policy.alert_max_ratio:.1%} for {policy.alert_sustained_for})",
        policy.generation,
        previous,
    )
    conditions = [
        condition(
            "Ready",
            True,
            "Reconciled",
            f"selecting {counts.matched} pod(s), {counts.injected} injected",
            policy.generation,
            previous,
        ),
        progressing,
        alert,
    ]
    if counts.overlapping:
        conditions.append(
            condition(
                "Overlapping",
                True,
                "SharedPods",
                f"also selected by {', '.join(counts.overlapping)}; "
                "the oldest policy (then by name) applies to each pod",
                policy.generation,
                previous,
            )
        )
    return {
        "observedGeneration": policy.generation,
        "targetPercentage": policy.percentage,
        "matchedPods": counts.matched,
        "injectedPods": counts.injected,
        "actualPercentage": f"{counts.actual_percentage:.0f}%",
        "fallbackRatio": ratio_text,
        "alertState": alert_state,
        **(connections or ConnectionCount()).status_fields(),
        "conditions": conditions,
    }


@dataclass(frozen=True)
class EventSpec:
    """An Event to post on the policy."""

    type: str
    reason: str
    message: str


def alert_events(
    policy: Policy, previous: str, current: str, ratio: float | None
) -> list[EventSpec]:
    """A Warning when the fallback alert starts firing, a Normal Event when it clears."""
    shown = "-" if ratio is None else f"{ratio:.1%}"
    if current == "Firing" and previous != "Firing":
        return [
            EventSpec(
                "Warning",
                "FallbackAlert",
                f"{shown} of events went around the sidecar over {policy.alert_window} (more "
                f"than {policy.alert_max_ratio:.1%} for {policy.alert_sustained_for})"
                + ("; injection paused" if policy.auto_pause else ""),
            )
        ]
    if previous == "Firing" and current != "Firing":
        return [EventSpec("Normal", "FallbackRecovered", f"fallback ratio back to {shown}")]
    return []


def transition_events(
    previous: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]
) -> list[EventSpec]:
    """An Event for every condition whose status flipped (FallbackAlert has its own, above)."""
    before = {c.get("type"): c.get("status") for c in previous}
    found = []
    for entry in current:
        kind = entry["type"]
        if kind == "FallbackAlert" or before.get(kind) == entry["status"]:
            continue
        if kind in before or entry["status"] == "True":
            found.append(EventSpec("Normal", entry["reason"], f"{kind}: {entry['message']}"))
    return found


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Avoid a write per second when nothing but timestamps would change."""

    def strip(status: Mapping[str, Any]) -> Any:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return {**{k: v for k, v in status.items() if k != "conditions"}, "conditions": conditions}

    return bool(strip(old) != strip(new))
