"""KafkaSidecarPolicy: the in-memory index the webhook decides with, and status reconciliation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_operator.conditions import PodView, build_status, count
from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.fallback import (
    FallbackTracker,
    PodSample,
    client_totals,
    parse_duration,
)
from kafka_sidecar_operator.metrics import FALLBACK_SCRAPES, RECONCILES
from kafka_sidecar_operator.names import GROUP, PLURAL, VERSION
from kafka_sidecar_operator.policies import Policy
from kafka_sidecar_operator.prometheus_rules import GROUP as RULE_GROUP
from kafka_sidecar_operator.prometheus_rules import PLURAL as RULE_PLURAL
from kafka_sidecar_operator.prometheus_rules import VERSION as RULE_VERSION
from kafka_sidecar_operator.prometheus_rules import prometheus_rule, rule_name

SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=2)


@kopf.index(GROUP, VERSION, PLURAL)
def policies_by_namespace(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, Policy]:
    return {namespace or "": Policy.from_body(body)}


@kopf.timer(GROUP, VERSION, PLURAL, id="status", interval=1.0, initial_delay=0.5)  # type: ignore[arg-type]
async def reconcile_status(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    policies_by_namespace: kopf.Index[str, Policy],
    pods_by_namespace: kopf.Index[str, PodView],
    **_: Any,
) -> None:
    """Recompute status from the indexes; scrape the sidecars for the fallback alert.

    Runs every second but scrapes only every ``fallback_interval``; everything it needs is in
    memory, so an operator restart recomputes the same status from the same pods.
    """
    config: OperatorConfig = memo.config
    policy = Policy.from_body(body)
    namespace = policy.namespace
    pods = list(pods_by_namespace.get(namespace, []))
    trackers: dict[str, FallbackTracker] = memo.setdefault("trackers", {})
    tracker = trackers.setdefault(policy.uid or policy.key, FallbackTracker())
    now = time.monotonic()
    last_scrape: dict[str, float] = memo.setdefault("last_scrape", {})
    try:
        counts = count(policy, policies_by_namespace.get(namespace, []), pods)
        if now - last_scrape.get(policy.key, 0.0) >= config.fallback_interval:
            last_scrape[policy.key] = now
            # A pod that is not running produces nothing: it is neither healthy nor in fallback.
            injected = [
                p for p in pods if p.injected and p.running and p.status.get("policy") == policy.key
            ]
            found = await asyncio.gather(*(scrape(p) for p in injected))
            samples = [s for s in found if s is not None]
            previous_state = tracker.state
            tracker.observe(
                now,
                samples,
                parse_duration(policy.alert_window),
                policy.alert_max_ratio,
                parse_duration(policy.alert_sustained_for),
            )
            announce_alert(body, policy, previous_state, tracker)
        previous = (body.get("status") or {}).get("conditions") or []
        status = build_status(policy, counts, tracker.ratio, tracker.state, previous)
    except Exception:
        RECONCILES.labels("error").inc()
        raise
    RECONCILES.labels("ok").inc()
    await own_prometheus_rule(memo, policy, body)
    announce_transitions(body, previous, status["conditions"])
    if _changed(body.get("status") or {}, status):
        patch.status.update(status)


async def own_prometheus_rule(memo: kopf.Memo, policy: Policy, body: kopf.Body) -> None:
    """Create or update the policy's PrometheusRule once per generation, if the CRD exists.

    Without the CRD the attempt is repeated every few minutes (it may be installed later).
    """
    applied: dict[str, int] = memo.setdefault("rules_applied", {})
    absent_until: float = memo.get("rules_absent_until", 0.0)
    if applied.get(policy.key) == policy.generation or time.monotonic() < absent_until:
        return
    rule: Any = prometheus_rule(policy, body)
    api = k8s.CustomObjectsApi(memo.api)

    def apply() -> bool:
        try:
            api.create_namespaced_custom_object(
                RULE_GROUP, RULE_VERSION, policy.namespace, RULE_PLURAL, rule
            )
        except ApiException as error:
            if error.status == 404:
                return False
            if error.status != 409:
                raise
            api.patch_namespaced_custom_object(
                RULE_GROUP,
                RULE_VERSION,
                policy.namespace,
                RULE_PLURAL,
                rule_name(policy),
                {"spec": rule["spec"]},
            )
        return True

    if await asyncio.get_running_loop().run_in_executor(None, apply):
        applied[policy.key] = policy.generation
    else:
        memo.rules_absent_until = time.monotonic() + 300


async def scrape(pod: PodView) -> PodSample | None:
    """A pod's client counters from its sidecar's /metrics; unreachable if not ready.

    A ready sidecar whose scrape fails is left out (None): one slow answer is not a fallback.
    """
    if not pod.sidecar_ready or not pod.ip or not pod.metrics_port:
        FALLBACK_SCRAPES.labels("unreachable").inc()
        return PodSample(pod.name, reachable=False)
    try:
        async with (
            aiohttp.ClientSession(timeout=SCRAPE_TIMEOUT) as session,
            session.get(f"http://{pod.ip}:{pod.metrics_port}/metrics") as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        FALLBACK_SCRAPES.labels("failed").inc()
        return None
    FALLBACK_SCRAPES.labels("ok").inc()
    attempts, fallback = client_totals(text)
    return PodSample(pod.name, attempts, fallback)


def announce_alert(
    body: kopf.Body, policy: Policy, previous: str, tracker: FallbackTracker
) -> None:
    ratio = "-" if tracker.ratio is None else f"{tracker.ratio:.1%}"
    if tracker.state == "Firing" and previous != "Firing":
        kopf.warn(
            body,
            reason="FallbackAlert",
            message=f"{ratio} of events went around the sidecar over "
            f"{policy.alert_window} (more than {policy.alert_max_ratio:.1%} for "
            f"{policy.alert_sustained_for})" + ("; injection paused" if policy.auto_pause else ""),
        )
    elif previous == "Firing" and tracker.state != "Firing":
        kopf.event(
            body,
            type="Normal",
            reason="FallbackRecovered",
            message=f"fallback ratio back to {ratio}",
        )


def announce_transitions(
    body: kopf.Body, previous: list[dict[str, Any]], current: list[dict[str, Any]]
) -> None:
    """An Event for every condition whose status flipped (except FallbackAlert: see above)."""
    before = {c.get("type"): c.get("status") for c in previous}
    for entry in current:
        kind = entry["type"]
        if kind == "FallbackAlert" or before.get(kind) == entry["status"]:
            continue
        if kind in before or entry["status"] == "True":
            kopf.event(
                body, type="Normal", reason=entry["reason"], message=f"{kind}: {entry['message']}"
            )


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Avoid a write per second when nothing but timestamps would change."""

    def strip(status: dict[str, Any]) -> Any:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return {**{k: v for k, v in status.items() if k != "conditions"}, "conditions": conditions}

    return bool(strip(old) != strip(new))
