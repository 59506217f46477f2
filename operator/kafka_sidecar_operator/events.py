"""Kubernetes Events posted from the webhook, which runs outside kopf's event-posting context.

Posted from a worker thread: admission answers never wait for the Event to be written.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
COMPONENT = "kafka-sidecar-operator"


def event_body(involved: dict[str, Any], kind: str, reason: str, message: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"generateName": f"{involved.get('name') or 'pod'}."},
        "involvedObject": involved,
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def post_in_background(
    api: k8s.ApiClient,
    namespace: str,
    involved: dict[str, Any],
    kind: str,
    reason: str,
    message: str,
) -> None:
    """Queue the Event on a worker thread; failures are logged, never raised."""
    body: Any = event_body(involved, kind, reason, message)

    def post() -> None:
        try:
            k8s.CoreV1Api(api).create_namespaced_event(namespace, body)
        except ApiException as error:
            log.warning("Could not post Event %s in %s: %s", reason, namespace, error.reason)

    asyncio.get_running_loop().run_in_executor(None, post)
