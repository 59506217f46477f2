"""``kubectl kafka-sidecar status|explain POD``: the operator's view, from the API server alone.

Installed as the console script ``kubectl-kafka_sidecar``, which kubectl finds on PATH.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kafka_sidecar_operator.conditions import PodView
from kafka_sidecar_operator.names import (
    GROUP,
    INJECT_ANNOTATION,
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_VALUE,
    PLURAL,
    VERSION,
)
from kafka_sidecar_operator.pod_record import StatusRecord
from kafka_sidecar_operator.policies import Policy, matching
from kafka_sidecar_operator.rollout import bucket, identity_for, selected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubectl kafka-sidecar", description="Inspect kafka-sidecar injection and rollout."
    )
    parser.add_argument("--kubeconfig", help="path of the kubeconfig (default: $KUBECONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser(
        "status", help="per policy: target and actual %%, pods, alert, connections saved"
    )
    status.add_argument("-n", "--namespace")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    explain = sub.add_parser("explain", help="why a pod was or was not injected")
    explain.add_argument("pod")
    explain.add_argument("-n", "--namespace", default="default")
    args = parser.parse_args(argv)
    api = k8s_config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    if args.command == "status":
        print(status_table(api, None if args.all_namespaces else (args.namespace or "default")))
    else:
        print(explain_pod(api, args.namespace, args.pod))
    return 0


def _policies(api: k8s.ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    custom = k8s.CustomObjectsApi(api)
    found: Any = (
        custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        if namespace is None
        else custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    )
    return list(found.get("items", []))


STATUS_HEADER: tuple[str, ...] = (
    "NAMESPACE",
    "POLICY",
    "TARGET",
    "ACTUAL",
    "INJECTED",
    "MATCHED",
    "IN-FALLBACK",
    "FALLBACK",
    "ALERT",
    "CONNECTIONS",
    "DIRECT(EST)",
    "SAVED",
)


def status_table(api: k8s.ApiClient, namespace: str | None) -> str:
    """One line per policy; pods in fallback are injected pods whose sidecar is not ready."""
    core = k8s.CoreV1Api(api)
    rows: list[tuple[str, ...]] = [STATUS_HEADER]
    for body in _policies(api, namespace):
        policy = Policy.from_body(body)
        pods = [
            PodView.from_body(core.api_client.sanitize_for_serialization(p))
            for p in core.list_namespaced_pod(policy.namespace).items
        ]
        in_fallback = sum(
            1
            for p in pods
            if p.injected and p.status.policy == policy.key and p.running and not p.sidecar_ready
        )
        rows.append(status_row(policy, body.get("status") or {}, in_fallback))
    return table(rows)


def status_row(policy: Policy, status: Mapping[str, Any], in_fallback: int) -> tuple[str, ...]:
    """A policy's line: its spec, its status as the operator wrote it, and the pods counted
    here. Connections are the sidecars' own and the direct estimate (``-`` until written)."""
    return (
        policy.namespace,
        policy.name,
        f"{policy.percentage}%",
        str(status.get("actualPercentage", "-")),
        str(status.get("injectedPods", 0)),
        str(status.get("matchedPods", 0)),
        str(in_fallback),
        str(status.get("fallbackRatio", "-")),
        str(status.get("alertState", "-")),
        str(status.get("sidecarConnections", "-")),
        str(status.get("directConnectionsEstimate", "-")),
        str(status.get("connectionsSaved", "-")),
    )


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def explain_pod(api: k8s.ApiClient, namespace: str, name: str) -> str:
    """The pod's recorded decision, and the inputs it was made from, as they are now."""
    core = k8s.CoreV1Api(api)
    pod: Any = core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, namespace))
    labels = core.read_namespace(namespace).metadata.labels or {}  # type: ignore[union-attr]
    metadata = pod.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    lines = [f"Pod {namespace}/{name}"]
    record = StatusRecord.of(pod)
    if record is not None:
        lines.append(
            f"  Decision:    {record.decision} (reason: {record.reason}) - {record.message}"
        )
    else:
        lines.append(
            "  Decision:    none recorded: the webhook did not see this pod (namespace "
            "not enabled, operator down, or created before it was installed)"
        )
    enabled = labels.get(NAMESPACE_LABEL) == NAMESPACE_LABEL_VALUE
    lines.append(
        f"  Namespace:   {NAMESPACE_LABEL}={labels.get(NAMESPACE_LABEL, '<unset>')} "
        f"({'enabled' if enabled else 'not enabled'})"
    )
    lines.append(
        f"  Opt-in:      {INJECT_ANNOTATION}={annotations.get(INJECT_ANNOTATION, '<unset>')}"
    )
    policies = [Policy.from_body(b) for b in _policies(api, namespace)]
    candidates = matching(policies, namespace, metadata.get("labels") or {})
    if not candidates:
        lines.append(f"  Policies:    none in {namespace} selects this pod")
    for index, policy in enumerate(candidates):
        if index:
            lines.append(
                f"               {policy.key}: also selects it (the oldest policy applies)"
            )
            continue
        recorded = record.bucket if record is not None else None
        value = (
            recorded
            if recorded is not None
            else bucket(policy.key, identity_for(pod, policy.granularity, metadata.get("uid", "")))
        )
        verdict = "in" if selected(float(value), policy.percentage) else "out"
        paused = " (paused)" if not policy.injecting else ""
        lines.append(
            f"  Policies:    {policy.key}{paused}: rollout {policy.percentage}% by "
            f"{policy.granularity}; bucket {float(value):.2f} -> {verdict}"
        )
    view = PodView.from_body(pod)
    has = view.has_sidecar
    lines.append(
        f"  Sidecar:     {'present' if has else 'absent'}"
        + (f", ready: {view.sidecar_ready}" if has else "")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
