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

from kafka_sidecar_api.contract import (
    METRICS_PORT,
    SOCKET_ADDRESS,
    SOCKET_DIR,
    producer_env_name,
)
from kafka_sidecar_operator.names import (
    APP_ENV,
    INJECT_ANNOTATION,
    INJECTED_LABEL,
    METRICS_PORT_NAME,
    NO_TOKEN_VOLUME,
    SIDECAR_NAME,
    SOCKET_VOLUME,
    STATUS_ANNOTATION,
    TOKEN_DIR,
)
from kafka_sidecar_operator.overrides import InvalidOverride, read_overrides
from kafka_sidecar_operator.pod_record import sidecar_of
from kafka_sidecar_operator.policies import Policy, matching
from kafka_sidecar_operator.quantities import resource_problem
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
    "malformed-pod",
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


def malformed(pod: Mapping[str, Any]) -> str | None:
    """Why the pod cannot take the sidecar as it stands, or None.

    The API server validates a pod only after the webhook: ``containers: null`` and the like
    reach us first. A volume already named like ours would be mounted into the sidecar, so it is
    the pod author's to rename.
    """
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return "the pod has no spec"
    for key in ("containers", "initContainers", "volumes"):
        entries = spec.get(key)
        if entries is not None and not (
            isinstance(entries, list) and all(isinstance(e, Mapping) for e in entries)
        ):
            return f"spec.{key} is not a list of objects"
    if not spec.get("containers"):
        return "spec.containers is empty"
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for key in ("env", "volumeMounts"):
            entries = container.get(key)
            if entries is not None and not (
                isinstance(entries, list) and all(isinstance(e, Mapping) for e in entries)
            ):
                return f"{key} of container {container.get('name')!r} is not a list of objects"
    taken = {v.get("name") for v in spec.get("volumes") or []} & {SOCKET_VOLUME, NO_TOKEN_VOLUME}
    if taken:
        return f"the pod already defines volume {sorted(taken)[0]}, a name the sidecar uses"
    return None


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
    if sidecar_of(pod) is not None:
        return Decision(False, "already-injected", f"the pod already has {SIDECAR_NAME}")
    problem = malformed(pod)
    if problem is not None:
        return Decision(False, "malformed-pod", problem)
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
    problem = resource_problem(sidecar_resources(policy, overrides))
    if problem is not None:
        return Decision(False, "invalid-override", problem, policy, overlapping=overlapping)
    # Never a bucket the pod brings along: its status annotation is its author's to write.
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
    metrics_port = int(
        overrides.get("metrics-port") or sidecar_spec.get("metricsPort", METRICS_PORT)
    )
    grace = int(
        overrides.get("shutdown-grace-seconds") or sidecar_spec.get("shutdownGraceSeconds", 25)
    )
    native = (overrides.get("native") or str(sidecar_spec.get("native", True)).lower()) == "true"

    for key in ("volumes", "containers", *(["initContainers"] if native else [])):
        spec[key] = list(spec.get(key) or [])
    volumes = spec["volumes"]
    for name in (SOCKET_VOLUME, NO_TOKEN_VOLUME):
        if not any(v.get("name") == name for v in volumes):
            volumes.append({"name": name, "emptyDir": {}})

    container = sidecar_container(decision.policy, overrides, image, metrics_port, grace, native)
    if native:
        spec["initContainers"].insert(0, container)
    else:
        spec["containers"].append(container)

    fallback = overrides.get("fallback", "direct")
    conflicts: list[str] = []
    for app in spec.get("containers", []):
        if app.get("name") == SIDECAR_NAME:
            continue
        env = app["env"] = list(app.get("env") or [])
        present = {e.get("name"): e for e in env}
        for name, value in {**APP_ENV, "KAFKA_SIDECAR_FALLBACK": fallback}.items():
            if name in present:
                if present[name].get("value") != value:
                    conflicts.append(f"{app.get('name')}:{name}")
                continue
            env.append({"name": name, "value": value})
        mounts = app["volumeMounts"] = list(app.get("volumeMounts") or [])
        if not any(
            m.get("name") == SOCKET_VOLUME or m.get("mountPath") == SOCKET_DIR for m in mounts
        ):
            mounts.append({"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR})

    warnings = []
    termination = spec.get("terminationGracePeriodSeconds")
    termination = termination if isinstance(termination, int) else 30
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
    # A label, unlike the annotation, can select the injected pods (PodMonitor, kubectl -l).
    _record(result, status, injected=True)
    return Injected(result, tuple(warnings), tuple(conflicts))


def _record(pod: dict[str, Any], status: Mapping[str, Any], injected: bool) -> None:
    """Write our status annotation and injected label, over whatever the pod author put there."""
    metadata = pod["metadata"] = dict(pod.get("metadata") or {})
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        STATUS_ANNOTATION: json.dumps(status, sort_keys=True),
    }
    labels = dict(metadata.get("labels") or {})
    labels.pop(INJECTED_LABEL, None)
    if injected:
        labels[INJECTED_LABEL] = "true"
    if labels or "labels" in metadata:
        metadata["labels"] = labels


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
        {"name": producer_env_name("bootstrap.servers"), "value": sidecar["bootstrapServers"]},
        {"name": "KAFKA_SIDECAR_LISTEN", "value": SOCKET_ADDRESS},
        {"name": "KAFKA_SIDECAR_METRICS_ADDR", "value": f"0.0.0.0:{metrics_port}"},
        {
            "name": "KAFKA_SIDECAR_LOG_LEVEL",
            "value": overrides.get("log-level") or sidecar.get("logLevel", "INFO"),
        },
        {"name": "KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS", "value": str(grace)},
        # The kubelet fills in the container's own memory limit in bytes (after any override);
        # the sidecar sizes librdkafka's queue from it, so a broker outage means BUFFER_FULL
        # answers rather than an OOM kill.
        {
            "name": "KAFKA_SIDECAR_MEMORY_LIMIT_BYTES",
            "valueFrom": {
                "resourceFieldRef": {"containerName": SIDECAR_NAME, "resource": "limits.memory"}
            },
        },
    ]
    if sidecar.get("allowedTopics"):
        env.append(
            {"name": "KAFKA_SIDECAR_ALLOWED_TOPICS", "value": ",".join(sidecar["allowedTopics"])}
        )
    for prop, value in sorted((sidecar.get("producerConfig") or {}).items()):
        env.append({"name": producer_env_name(prop), "value": str(value)})
    for ref in sidecar.get("secretRefs") or []:
        env.append(
            {
                "name": producer_env_name(ref["property"]),
                "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}},
            }
        )

    resources = sidecar_resources(policy, overrides)
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


def sidecar_resources(policy: Policy, overrides: Mapping[str, str]) -> dict[str, Any]:
    """The policy's resources (or the defaults) with the pod's override annotations on top."""
    resources: dict[str, Any] = copy.deepcopy(
        dict(policy.sidecar.get("resources") or DEFAULT_RESOURCES)
    )
    for field_name, (section, resource) in {
        "cpu-request": ("requests", "cpu"),
        "cpu-limit": ("limits", "cpu"),
        "memory-request": ("requests", "memory"),
        "memory-limit": ("limits", "memory"),
    }.items():
        if field_name in overrides:
            resources.setdefault(section, {})[resource] = overrides[field_name]
    return resources


def skip_status(pod: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The pod with our status record written and any injected label it brought removed.

    Also for ``already-injected``: the webhook runs once per pod (no reinvocation), so a sidecar
    already there is the author's, and a record or label they wrote must not count it as ours.
    """
    result: dict[str, Any] = copy.deepcopy(dict(pod))
    _record(result, decision.status(None), injected=False)
    return result
