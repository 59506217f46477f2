"""The injection decision and the pod mutation: pure functions of the pod and the policies.

``decide`` says whether and why; ``inject`` returns the mutated pod (a deep copy), adding only
what we own, so running it on its own output changes nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka_sidecar_operator.names import (
    APP_ENV,
    INJECT_ANNOTATION,
    INJECTED_LABEL,
    METRICS_PORT_NAME,
    NO_TOKEN_VOLUME,
    SIDECAR_NAME,
    SOCKET_ADDRESS,
    SOCKET_DIR,
    SOCKET_VOLUME,
    STATUS_ANNOTATION,
    TOKEN_DIR,
)
from kafka_sidecar_operator.overrides import InvalidOverride, read_overrides
from kafka_sidecar_operator.policies import Policy, matching
from kafka_sidecar_operator.rollout import bucket, identity_for, selected

Reason = Literal[
    "injected",
    "no-annotation",
    "annotation-false",
    "excluded-namespace",
    "host-network",
    "already-injected",
    "no-policy",
    "policy-paused",
    "invalid-override",
    "outside-rollout",
]
FLUSH_MARGIN_SECONDS = 5
DEFAULT_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


@dataclass(frozen=True)
class Decision:
    """Whether to inject, why, and everything the patch needs."""

    inject: bool
    reason: Reason
    message: str = ""
    policy: Policy | None = None
    bucket: float | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)
    overlapping: tuple[str, ...] = ()

    def status(self, image: str | None) -> dict[str, Any]:
        """The ``kafka-sidecar.io/status`` record."""
        return {
            "decision": "injected" if self.inject else "skipped",
            "reason": self.reason,
            "message": self.message,
            "policy": self.policy.key if self.policy else None,
            "image": image,
            "bucket": self.bucket,
        }


def recorded_bucket(annotations: Mapping[str, str]) -> float | None:
    """A bucket an earlier pass recorded: a reinvocation must reach the same answer."""
    try:
        value = json.loads(annotations.get(STATUS_ANNOTATION, "{}")).get("bucket")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(
        c.get("name") == SIDECAR_NAME
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    )


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    policies: Iterable[Policy],
    excluded_namespaces: Iterable[str],
    request_uid: str = "",
) -> Decision:
    """Every skip has a reason users can look up; checks run cheapest first."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    raw = annotations.get(INJECT_ANNOTATION)
    if raw is None:
        return Decision(False, "no-annotation", f"no {INJECT_ANNOTATION} annotation")
    if raw.strip().lower() != "true":
        if raw.strip().lower() == "false":
            return Decision(False, "annotation-false", f"{INJECT_ANNOTATION} is false")
        return Decision(
            False,
            "invalid-override",
            f"annotation {INJECT_ANNOTATION}={raw!r} is invalid: expected true or false",
        )
    if namespace in set(excluded_namespaces):
        return Decision(False, "excluded-namespace", f"namespace {namespace} is never injected")
    if (pod.get("spec") or {}).get("hostNetwork"):
        return Decision(
            False,
            "host-network",
            "hostNetwork pods share the node's network; the sidecar is not injected",
        )
    if has_sidecar(pod):
        return Decision(False, "already-injected", f"the pod already has {SIDECAR_NAME}")
    candidates = matching(policies, namespace, metadata.get("labels") or {})
    if not candidates:
        return Decision(False, "no-policy", f"no KafkaSidecarPolicy in {namespace} selects the pod")
    policy = candidates[0]
    overlapping = tuple(p.key for p in candidates[1:])
    if not policy.injecting:
        why = "paused" if policy.paused else "auto-paused by its fallback alert"
        return Decision(
            False, "policy-paused", f"policy {policy.key} is {why}", policy, overlapping=overlapping
        )
    try:
        overrides = read_overrides(annotations)
    except InvalidOverride as error:
        return Decision(False, "invalid-override", str(error), policy, overlapping=overlapping)
    value = recorded_bucket(annotations)
    if value is None:
        value = bucket(policy.key, identity_for(pod, policy.granularity, request_uid))
    if not selected(value, policy.percentage):
        return Decision(
            False,
            "outside-rollout",
            f"rollout bucket {value:.2f} is not below {policy.percentage}%",
            policy,
            value,
            overrides,
            overlapping,
        )
    return Decision(
        True, "injected", f"injected by policy {policy.key}", policy, value, overrides, overlapping
    )


@dataclass(frozen=True)
class Injected:
    """The mutated pod, and what the user should hear about it."""

    pod: dict[str, Any]
    warnings: tuple[str, ...]
    env_conflicts: tuple[str, ...]


def sidecar_image(decision: Decision, default_image: str) -> str:
    sidecar = decision.policy.sidecar if decision.policy else {}
    return decision.overrides.get("image") or sidecar.get("image") or default_image


def inject(pod: Mapping[str, Any], decision: Decision, default_image: str) -> Injected:
    """Add the sidecar, the socket volume, the app env and mounts, and the status record."""
    assert decision.inject
    assert decision.policy is not None
    result: dict[str, Any] = copy.deepcopy(dict(pod))
    spec = result.setdefault("spec", {})
    overrides = decision.overrides
    sidecar_spec = decision.policy.sidecar
    image = sidecar_image(decision, default_image)
    metrics_port = int(overrides.get("metrics-port") or sidecar_spec.get("metricsPort", 9464))
    grace = int(
        overrides.get("shutdown-grace-seconds") or sidecar_spec.get("shutdownGraceSeconds", 25)
    )
    native = (overrides.get("native") or str(sidecar_spec.get("native", True)).lower()) == "true"

    volumes = spec.setdefault("volumes", [])
    for name in (SOCKET_VOLUME, NO_TOKEN_VOLUME):
        if not any(v.get("name") == name for v in volumes):
            volumes.append({"name": name, "emptyDir": {}})

    container = sidecar_container(decision.policy, overrides, image, metrics_port, grace, native)
    if native:
        spec.setdefault("initContainers", []).insert(0, container)
    else:
        spec.setdefault("containers", []).append(container)

    fallback = overrides.get("fallback", "direct")
    conflicts: list[str] = []
    for app in spec.get("containers", []):
        if app.get("name") == SIDECAR_NAME:
            continue
        env = app.setdefault("env", [])
        present = {e.get("name"): e for e in env}
        for name, value in {**APP_ENV, "KAFKA_SIDECAR_FALLBACK": fallback}.items():
            if name in present:
                if present[name].get("value") != value:
                    conflicts.append(f"{app.get('name')}:{name}")
                continue
            env.append({"name": name, "value": value})
        mounts = app.setdefault("volumeMounts", [])
        if not any(
            m.get("name") == SOCKET_VOLUME or m.get("mountPath") == SOCKET_DIR for m in mounts
        ):
            mounts.append({"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR})

    warnings = []
    termination = spec.get("terminationGracePeriodSeconds", 30)
    if termination < grace + FLUSH_MARGIN_SECONDS:
        warnings.append(
            f"terminationGracePeriodSeconds={termination} is too short for the Kafka sidecar to "
            f"flush ({grace}s + {FLUSH_MARGIN_SECONDS}s margin): events may be re-sent on shutdown"
        )
    if conflicts:
        warnings.append("kept the app's own value of " + ", ".join(conflicts))
    if decision.overlapping:
        warnings.append(
            f"policies {', '.join(decision.overlapping)} also select this pod; "
            f"{decision.policy.key} applies (the oldest)"
        )

    status = decision.status(image)
    if conflicts:
        status["envConflicts"] = conflicts
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[STATUS_ANNOTATION] = json.dumps(status, sort_keys=True)
    # A label, unlike the annotation, can select the injected pods (PodMonitor, kubectl -l).
    metadata.setdefault("labels", {})[INJECTED_LABEL] = "true"
    return Injected(result, tuple(warnings), tuple(conflicts))


def sidecar_container(
    policy: Policy,
    overrides: Mapping[str, str],
    image: str,
    metrics_port: int,
    grace: int,
    native: bool,
) -> dict[str, Any]:
    """The sidecar container: hardened, probed, configured by env only."""
    sidecar = policy.sidecar
    env: list[dict[str, Any]] = [
        {"name": "KAFKA_PRODUCER_BOOTSTRAP_SERVERS", "value": sidecar["bootstrapServers"]},
        {"name": "KAFKA_SIDECAR_LISTEN", "value": SOCKET_ADDRESS},
        {"name": "KAFKA_SIDECAR_METRICS_ADDR", "value": f"0.0.0.0:{metrics_port}"},
        {
            "name": "KAFKA_SIDECAR_LOG_LEVEL",
            "value": overrides.get("log-level") or sidecar.get("logLevel", "INFO"),
        },
        {"name": "KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS", "value": str(grace)},
    ]
    if sidecar.get("allowedTopics"):
        env.append(
            {"name": "KAFKA_SIDECAR_ALLOWED_TOPICS", "value": ",".join(sidecar["allowedTopics"])}
        )
    for prop, value in sorted((sidecar.get("producerConfig") or {}).items()):
        env.append({"name": producer_env(prop), "value": str(value)})
    for ref in sidecar.get("secretRefs") or []:
        env.append(
            {
                "name": producer_env(ref["property"]),
                "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}},
            }
        )

    resources = copy.deepcopy(sidecar.get("resources") or DEFAULT_RESOURCES)
    for field_name, (section, resource) in {
        "cpu-request": ("requests", "cpu"),
        "cpu-limit": ("limits", "cpu"),
        "memory-request": ("requests", "memory"),
        "memory-limit": ("limits", "memory"),
    }.items():
        if field_name in overrides:
            resources.setdefault(section, {})[resource] = overrides[field_name]

    probe = {"httpGet": {"path": "/healthz", "port": METRICS_PORT_NAME}}
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": image,
        "command": ["kafka-sidecar", "serve"],
        "env": env,
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": metrics_port, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": [
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
            {"name": NO_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        # The app starts only once the sidecar serves (native sidecars gate later containers
        # on their startup probe).
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 60},
        "livenessProbe": {**probe, "periodSeconds": 10},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": METRICS_PORT_NAME},
            "periodSeconds": 5,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if native:
        container["restartPolicy"] = "Always"
    return container


def producer_env(prop: str) -> str:
    """librdkafka property → the sidecar's ``KAFKA_PRODUCER_*`` variable."""
    return "KAFKA_PRODUCER_" + prop.upper().replace(".", "_")


def skip_status(pod: Mapping[str, Any], decision: Decision) -> dict[str, Any] | None:
    """The pod with only its status annotation added (skips), or None when nothing changes."""
    if decision.reason == "already-injected":
        return None
    result: dict[str, Any] = copy.deepcopy(dict(pod))
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[STATUS_ANNOTATION] = json.dumps(
        decision.status(None), sort_keys=True
    )
    return result
