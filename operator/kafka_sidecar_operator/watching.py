"""Keeps a ``PolicyView`` filled from the API server: list, then watch; list again on expiry.

A thread per scope, independent of kopf, so a standby replica (whose kopf watches peering
pauses) still answers the webhook from every policy.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_operator.names import GROUP, PLURAL, VERSION
from kafka_sidecar_operator.policy_view import PolicyView

log = logging.getLogger(__name__)
WATCH_SECONDS = 30  # each watch request ends after this long: a stop is noticed within it
RETRY_SECONDS = 1.0


def api_client() -> k8s.ApiClient:
    """A client from the in-cluster service account, else the kubeconfig."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


def follow_policies(api: k8s.ApiClient, view: PolicyView, stop: threading.Event) -> None:
    """Start one daemon thread per scope of ``view``; they end when ``stop`` is set."""
    for scope in view.scopes:
        threading.Thread(
            target=_follow,
            args=(api, view, scope, stop),
            name=f"policy-watch-{scope or 'all'}",
            daemon=True,
        ).start()


def _follow(api: k8s.ApiClient, view: PolicyView, scope: str, stop: threading.Event) -> None:
    custom = k8s.CustomObjectsApi(api)

    def call(**kwargs: Any) -> Any:
        if scope:
            return custom.list_namespaced_custom_object(GROUP, VERSION, scope, PLURAL, **kwargs)
        return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

    while not stop.is_set():
        try:
            listed = call(_request_timeout=30)
            view.replace(scope, listed.get("items") or [])
            version = listed["metadata"]["resourceVersion"]
            while not stop.is_set():
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    call,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=WATCH_SECONDS + 10,
                )
                for event in stream:
                    body = event["raw_object"]
                    version = (body.get("metadata") or {}).get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        view.apply(event["type"], body)
        except ApiException as error:
            if error.status != 410:  # 410: the version expired, list again at once
                log.warning("Watching policies (%s) failed: %s", scope or "all", error.reason)
                stop.wait(RETRY_SECONDS)
        except Exception as error:  # a dropped connection: list again after a pause
            log.warning("Watching policies (%s) failed: %s", scope or "all", error)
            stop.wait(RETRY_SECONDS)
