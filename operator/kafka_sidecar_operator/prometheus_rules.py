"""A PrometheusRule per policy with the same fallback alert, where the Prometheus Operator runs.

Owned by the policy (ownerReference), so deleting the policy deletes the rule.
"""

from __future__ import annotations

from typing import Any

from kafka_sidecar_operator.names import GROUP as POLICY_GROUP
from kafka_sidecar_operator.names import VERSION as POLICY_VERSION
from kafka_sidecar_operator.policies import Policy

GROUP, VERSION, PLURAL = "monitoring.coreos.com", "v1", "prometheusrules"


def rule_name(policy: Policy) -> str:
    return f"kafka-sidecar-{policy.name}"[:253]


def prometheus_rule(policy: Policy) -> dict[str, Any]:
    """The rule: fallback events / attempts over the window, above maxRatio for sustainedFor."""
    selector = f'namespace="{policy.namespace}"'
    window = policy.alert_window
    expr = (
        f'sum(increase(kafka_sidecar_client_events_total{{{selector},outcome="fallback"}}[{window}]))'
        f" / clamp_min(sum(increase(kafka_sidecar_client_events_total"
        f'{{{selector},outcome="attempts"}}[{window}])), 1) > {policy.alert_max_ratio}'
    )
    summary = f"Apps under {policy.key} produce around their Kafka sidecar"
    description = (
        f"More than {policy.alert_max_ratio:.1%} of events went through the direct fallback "
        f"over {window} for {policy.alert_sustained_for}."
    )
    alert = {
        "alert": "KafkaSidecarFallbackRatioHigh",
        "expr": expr,
        "for": policy.alert_sustained_for,
        "labels": {"severity": "warning", "kafka_sidecar_policy": policy.key},
        "annotations": {"summary": summary, "description": description},
    }
    owner = {
        "apiVersion": f"{POLICY_GROUP}/{POLICY_VERSION}",
        "kind": "KafkaSidecarPolicy",
        "name": policy.name,
        "uid": policy.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PrometheusRule",
        "metadata": {
            "name": rule_name(policy),
            "namespace": policy.namespace,
            "labels": {"app.kubernetes.io/managed-by": "kafka-sidecar-operator"},
            "ownerReferences": [owner],
        },
        "spec": {
            "groups": [
                {"name": f"kafka-sidecar.{policy.namespace}.{policy.name}", "rules": [alert]}
            ]
        },
    }
