"""The injection webhook and the pod index."""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

import kopf

from kafka_sidecar_operator.conditions import PodView
from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.events import post_in_background
from kafka_sidecar_operator.injection import decide, inject, skip_status
from kafka_sidecar_operator.metrics import INJECTIONS, WEBHOOK_LATENCY
from kafka_sidecar_operator.names import INJECT_ANNOTATION, STATUS_ANNOTATION
from kafka_sidecar_operator.pod_record import kept_record
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.webhook import HANDLER_ID, RECORD_HANDLER_ID


@kopf.index("pods")
def pods_by_namespace(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, PodView] | None:
    """Opted-in and decided pods only: policy status never needs the others."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    if INJECT_ANNOTATION not in annotations and STATUS_ANNOTATION not in annotations:
        return None
    return {namespace or "": PodView.from_body(body)}


@kopf.on.mutate("pods", id=HANDLER_ID, operations=["CREATE"], ignore_failures=True)
async def inject_sidecar(
    body: kopf.Body,
    patch: kopf.Patch,
    warnings: list[str],
    dryrun: bool,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Decide, then write the mutated pod through kopf's patch (it diffs to a JSON patch).

    Async on purpose: it computes in microseconds, and kopf's event posting needs the loop.
    Never raises: a bug here must not block pod creation (kopf would deny the request).
    """
    started = time.perf_counter()
    config: OperatorConfig = memo.config
    view: PolicyView = memo.view
    pod = dict(body)
    namespace = body.get("metadata", {}).get("namespace") or ""
    if not view.complete:
        # Deciding now could say no-policy for a pod a policy selects: admit it unchanged, as
        # when the operator is down (readiness keeps a Service from sending us this).
        INJECTIONS.labels("error", "not-ready").inc()
        return
    try:
        decision = decide(
            pod,
            namespace,
            view.in_namespace(namespace),
            config.never_injected,
            request_uid=uuid.uuid4().hex[:12],
        )
        if decision.inject:
            result = inject(pod, decision, config.default_image)
            mutated = result.pod
            warnings.extend(result.warnings)
            logger.info("Injected sidecar into Pod %s/%s", namespace, _name(pod))
        else:
            mutated = skip_status(pod, decision)
            if decision.reason == "invalid-override":
                logger.warning(
                    "Admitted Pod %s/%s without the sidecar: %s",
                    namespace,
                    _name(pod),
                    decision.message,
                )
                warnings.append(f"kafka-sidecar not injected: {decision.message}")
                if not dryrun:  # a dry run has no side effects
                    _event_for(memo.api, pod, namespace, decision.message)
    except Exception:
        logger.exception(
            "Admitted Pod %s/%s unchanged after an internal error", namespace, _name(pod)
        )
        INJECTIONS.labels("error", "internal-error").inc()
        return
    patch.fns.append(lambda target: _replace(target, mutated))
    INJECTIONS.labels("injected" if decision.inject else "skipped", decision.reason).inc()
    WEBHOOK_LATENCY.observe(time.perf_counter() - started)


def _event_for(api: Any, pod: dict[str, Any], namespace: str, message: str) -> None:
    """A Warning Event on the pod's owner (at admission the pod often has no name or uid yet)."""
    metadata = pod.get("metadata", {})
    owner = next(iter(metadata.get("ownerReferences") or []), None)
    if owner is not None:
        involved = {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": owner.get("name"),
            "namespace": namespace,
            "uid": owner.get("uid"),
        }
    elif metadata.get("name"):
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": metadata["name"],
            "namespace": namespace,
        }
    else:
        return
    post_in_background(api, namespace, involved, "Warning", "InjectionSkipped", message)


def _replace(target: kopf.RawBody, mutated: dict[str, Any]) -> None:
    body = cast(dict[str, Any], target)
    body.clear()
    body.update(mutated)


def _name(pod: dict[str, Any]) -> str:
    metadata = pod.get("metadata", {})
    return str(metadata.get("name") or f"{metadata.get('generateName', '')}<generated>")


@kopf.on.mutate("pods", id=RECORD_HANDLER_ID, operations=["UPDATE"], ignore_failures=True)
async def keep_record(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """Put back the status record and injected label an update tried to change: pod authors
    may edit their pods' metadata, but these say what the operator decided and what it scrapes."""
    old: kopf.Body | None = kwargs.get("old")
    if old is None:
        return
    kept = kept_record(dict(old), dict(body))
    if kept is not None:
        patch.fns.append(lambda target: _replace(target, kept))
