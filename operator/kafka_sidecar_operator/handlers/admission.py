"""The admission handlers: injection on pod CREATE, the record keeper on pod UPDATE.

Plain functions of an AdmissionReview (no kopf), answered by the operator's own webhook server in
a child process (``webhook_process``): kopf's event loop, its pod index and the policies' status
never delay pod creation.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.events import post_in_background
from kafka_sidecar_operator.injection import decide, inject, skip_status
from kafka_sidecar_operator.metrics import count_injection, observe_webhook_seconds
from kafka_sidecar_operator.pod_record import kept_record
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.webhook import (
    HANDLER_ID,
    RECORD_HANDLER_ID,
    admission_response,
    json_patch,
    pin_namespace,
    review_request,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    """Answers the webhook's AdmissionReviews from the policy view (any thread may call it)."""

    config: OperatorConfig
    view: PolicyView
    api: Any  # the Kubernetes ApiClient Events are posted with

    def answer(self, handler_id: str, review: dict[str, Any]) -> dict[str, Any]:
        """The AdmissionReview answer for the handler at ``/<handler_id>``: always allowed.

        Raises InvalidReview for a body that is no review, KeyError for an unknown handler.
        Called on a running event loop (skipped pods' Events are posted from its executor).
        """
        handlers = {HANDLER_ID: self.inject_sidecar, RECORD_HANDLER_ID: keep_record}
        handler = handlers[handler_id]
        request = review_request(review)
        pin_namespace(review)
        pod = request.get("object")
        if not isinstance(pod, dict):
            return admission_response(review, ())
        warnings: list[str] = []
        mutated = handler(request, pod, warnings)
        patch = json_patch(pod, mutated) if mutated is not None else []
        return admission_response(review, patch, warnings)

    def inject_sidecar(
        self, request: dict[str, Any], pod: dict[str, Any], warnings: list[str]
    ) -> dict[str, Any] | None:
        """Decide on a pod being created; the mutated pod, or None to admit it as it is.

        Never raises: a bug here must not block pod creation.
        """
        if request.get("operation") != "CREATE":
            return None
        started = time.perf_counter()
        namespace = str(request.get("namespace") or "")
        if not self.view.complete:
            # Deciding now could say no-policy for a pod a policy selects: admit it unchanged,
            # as when the operator is down (readiness keeps a Service from sending us this).
            count_injection("error", "not-ready")
            return None
        try:
            decision = decide(
                pod,
                namespace,
                self.view.in_namespace(namespace),
                self.config.never_injected,
                request_uid=uuid.uuid4().hex[:12],
            )
            if decision.inject:
                result = inject(pod, decision, self.config.default_image)
                mutated = result.pod
                warnings.extend(result.warnings)
                log.info("Injected sidecar into Pod %s/%s", namespace, _name(pod))
            else:
                mutated = skip_status(pod, decision)
                if decision.reason == "invalid-override":
                    log.warning(
                        "Admitted Pod %s/%s without the sidecar: %s",
                        namespace,
                        _name(pod),
                        decision.message,
                    )
                    warnings.append(f"kafka-sidecar not injected: {decision.message}")
                    if not request.get("dryRun"):  # a dry run has no side effects
                        _event_for(self.api, pod, namespace, decision.message)
        except Exception:
            log.exception(
                "Admitted Pod %s/%s unchanged after an internal error", namespace, _name(pod)
            )
            count_injection("error", "internal-error")
            return None
        count_injection("injected" if decision.inject else "skipped", decision.reason)
        observe_webhook_seconds(time.perf_counter() - started)
        return mutated


def keep_record(
    request: dict[str, Any], pod: dict[str, Any], _: list[str]
) -> dict[str, Any] | None:
    """Put back the status record and injected label an update tried to change: pod authors
    may edit their pods' metadata, but these say what the operator decided and what it scrapes."""
    old = request.get("oldObject")
    if request.get("operation") != "UPDATE" or not isinstance(old, dict):
        return None
    return kept_record(old, pod)


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


def _name(pod: dict[str, Any]) -> str:
    metadata = pod.get("metadata", {})
    return str(metadata.get("name") or f"{metadata.get('generateName', '')}<generated>")
