"""KafkaSidecarPolicy status: a loop on the leading replica over the policy view and pod index.

Not a kopf timer: kopf puts a finalizer on every object a timer runs for, so deleting a policy
(or its namespace) would hang whenever the operator is absent. The loop asks kopf's peering
question itself (``leadership.leading``), so one replica at a time writes status. Every decision
is a pure function (``conditions``, ``fallback``); this module reads, calls and writes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_operator.conditions import (
    Counts,
    EventSpec,
    PodView,
    alert_events,
    build_status,
    count_all,
    status_changed,
    transition_events,
)
from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.connections import ConnectionCount, count_connections
from kafka_sidecar_operator.events import post_in_background
from kafka_sidecar_operator.fallback import FallbackTracker, parse_duration
from kafka_sidecar_operator.leadership import leading
from kafka_sidecar_operator.metrics import RECONCILES
from kafka_sidecar_operator.names import GROUP, PLURAL, VERSION
from kafka_sidecar_operator.policies import Policy
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.prometheus_rules import GROUP as RULE_GROUP
from kafka_sidecar_operator.prometheus_rules import PLURAL as RULE_PLURAL
from kafka_sidecar_operator.prometheus_rules import VERSION as RULE_VERSION
from kafka_sidecar_operator.prometheus_rules import prometheus_rule, rule_name
from kafka_sidecar_operator.scraping import Scraper

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 1.0
LEADERSHIP_CHECK_SECONDS = 2.0
SLOW_ROUND_SECONDS = 5.0
RULE_ABSENT_RETRY_SECONDS = 300.0  # no PrometheusRule CRD: it may be installed later
RULE_ERROR_RETRY_SECONDS = 60.0


@dataclass
class RuleState:
    """The policies' PrometheusRules: written once per generation, in the background."""

    applied: dict[str, int] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass
class ReconcileState:
    """What outlives one round, per policy object (``state_key``: a policy deleted and made
    again under its name starts afresh)."""

    trackers: dict[str, FallbackTracker] = field(default_factory=dict)
    last_scrape: dict[str, float] = field(default_factory=dict)
    connections: dict[str, ConnectionCount] = field(default_factory=dict)
    written: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    rules: RuleState = field(default_factory=RuleState)

    def forget_all_but(self, keys: set[str]) -> None:
        tables: tuple[dict[str, Any], ...] = (
            self.trackers,
            self.last_scrape,
            self.connections,
            self.written,
            self.rules.applied,
            self.rules.retry_at,
        )
        for table in tables:
            for key in [k for k in table if k not in keys]:
                del table[key]


@dataclass
class Reconciler:
    """Writes every policy's status each second while this replica leads."""

    config: OperatorConfig
    api: k8s.ApiClient
    view: PolicyView
    pods: Mapping[str, Iterable[PodView]]
    identity: str
    priority: int
    pods_indexed: Callable[[], bool] = lambda: True
    scraper: Scraper = field(default_factory=Scraper)
    state: ReconcileState = field(default_factory=ReconcileState)
    _leading: bool = False
    _leadership_checked: float = float("-inf")

    async def run_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                # Counting from a pod index still being filled (after a start) would report
                # pods missing and clear a firing alert: wait for kopf to have listed them all.
                if self.view.complete and self.pods_indexed() and await self.leads():
                    await self.round()
            except Exception:
                log.exception("Policy status round failed; retrying")
            took = time.monotonic() - started
            if took > SLOW_ROUND_SECONDS:
                log.warning(
                    "Policy status round took %.1fs for %d policies", took, len(self.view.all())
                )
            await asyncio.sleep(max(0.1, INTERVAL_SECONDS - (time.monotonic() - started)))

    async def round(self) -> None:
        policies = self.view.all()
        self.state.forget_all_but({state_key(p) for p in policies})
        counts: dict[str, Counts] = {}
        for namespace in sorted({p.namespace for p in policies}):
            # A snapshot on the loop (kopf updates the index there); counted on a worker thread
            # so the webhook, on the same loop, is not held up by a large namespace.
            pods = list(self.pods.get(namespace, []))
            in_namespace = self.view.in_namespace(namespace)
            counts.update(await asyncio.to_thread(count_all, in_namespace, pods))
        outcomes = await asyncio.gather(
            *(self.reconcile(p, counts[p.key]) for p in policies), return_exceptions=True
        )
        for policy, outcome in zip(policies, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                RECONCILES.labels("error").inc()
                log.warning("Could not reconcile KafkaSidecarPolicy %s: %s", policy.key, outcome)
            else:
                RECONCILES.labels("ok").inc()

    async def reconcile(self, policy: Policy, counts: Counts) -> None:
        now = time.monotonic()
        key = state_key(policy)
        tracker = self.state.trackers.get(key)
        if tracker is None:
            tracker = self.state.trackers[key] = FallbackTracker.resume(
                policy.status.get("alertState"), now, parse_duration(policy.alert_sustained_for)
            )
        events: list[EventSpec] = []
        if now - self.state.last_scrape.get(key, float("-inf")) >= (self.config.fallback_interval):
            self.state.last_scrape[key] = now
            pods = list(self.pods.get(policy.namespace, []))
            targets = [p for p in pods if p.scrapable_for(policy.key)]
            samples = await self.scraper.scrape_all(targets)
            self.state.connections[key] = count_connections(samples)
            before = tracker.state
            tracker.observe(
                now,
                samples,
                parse_duration(policy.alert_window),
                policy.alert_max_ratio,
                parse_duration(policy.alert_sustained_for),
            )
            events += alert_events(policy, before, tracker.state, tracker.ratio)
        current = self.state.written.get(key) or policy.status
        previous = current.get("conditions") or []
        status = build_status(
            policy,
            counts,
            tracker.ratio,
            tracker.state,
            previous,
            self.state.connections.get(key),
        )
        events += transition_events(previous, status["conditions"])
        self.ensure_rule(policy)  # never waited for: status does not depend on it
        if status_changed(current, status):
            await asyncio.to_thread(self.write_status, policy, status)
            self.state.written[key] = status
        for event in events:
            post_in_background(
                self.api, policy.namespace, policy_reference(policy), *event_fields(event)
            )

    def write_status(self, policy: Policy, status: dict[str, Any]) -> None:
        k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
            GROUP, VERSION, policy.namespace, PLURAL, policy.name, {"status": status}
        )

    async def leads(self) -> bool:
        """Whether this replica writes status: always when standalone, else by kopf's rule."""
        if not self.config.peering:
            return True
        now = time.monotonic()
        if now - self._leadership_checked >= LEADERSHIP_CHECK_SECONDS:
            self._leadership_checked = now
            peers = await asyncio.to_thread(self.read_peers)
            now_leading = leading(
                peers, self.identity, self.priority, datetime.datetime.now(datetime.UTC)
            )
            if now_leading and not self._leading:
                # Another replica wrote status meanwhile: resume from what it wrote.
                self.state.trackers.clear()
                self.state.written.clear()
            self._leading = now_leading
        return self._leading

    def read_peers(self) -> Mapping[str, Any]:
        custom = k8s.CustomObjectsApi(self.api)
        peering: Any
        if self.config.watch_namespaces:
            merged: dict[str, Any] = {}
            for namespace in self.config.watch_namespaces:
                peering = custom.get_namespaced_custom_object(
                    "kopf.dev", "v1", namespace, "kopfpeerings", self.config.peering
                )
                merged.update(peering.get("status") or {})
            return merged
        peering = custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", self.config.peering
        )
        return dict(peering.get("status") or {})

    def ensure_rule(self, policy: Policy) -> None:
        """Start writing the policy's PrometheusRule if this generation has none yet."""
        rules = self.state.rules
        now = time.monotonic()
        key = state_key(policy)
        if (
            rules.applied.get(key) == policy.generation
            or now < rules.retry_at.get(key, 0.0)
            or any(task.get_name() == key for task in rules.in_flight)
        ):
            return
        task = asyncio.create_task(self.apply_rule(policy), name=key)
        rules.in_flight.add(task)
        task.add_done_callback(rules.in_flight.discard)

    async def apply_rule(self, policy: Policy) -> None:
        rules = self.state.rules
        key = state_key(policy)
        try:
            present = await asyncio.to_thread(write_prometheus_rule, self.api, policy)
        except ApiException as error:
            rules.retry_at[key] = time.monotonic() + RULE_ERROR_RETRY_SECONDS
            log.warning(
                "Could not write PrometheusRule for %s (retrying in %.0fs): %s",
                policy.key,
                RULE_ERROR_RETRY_SECONDS,
                error.reason,
            )
            return
        if present:
            rules.applied[key] = policy.generation
        else:
            rules.retry_at[key] = time.monotonic() + RULE_ABSENT_RETRY_SECONDS


def write_prometheus_rule(api: k8s.ApiClient, policy: Policy) -> bool:
    """Create or update the rule; False when the PrometheusRule CRD is not installed."""
    custom = k8s.CustomObjectsApi(api)
    rule: Any = prometheus_rule(policy)
    try:
        custom.create_namespaced_custom_object(
            RULE_GROUP, RULE_VERSION, policy.namespace, RULE_PLURAL, rule
        )
    except ApiException as error:
        if error.status == 404:
            return False
        if error.status != 409:
            raise
        custom.patch_namespaced_custom_object(
            RULE_GROUP,
            RULE_VERSION,
            policy.namespace,
            RULE_PLURAL,
            rule_name(policy),
            {"spec": rule["spec"]},
        )
    return True


def state_key(policy: Policy) -> str:
    return policy.uid or policy.key


def policy_reference(policy: Policy) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "KafkaSidecarPolicy",
        "name": policy.name,
        "namespace": policy.namespace,
        "uid": policy.uid,
    }


def event_fields(event: EventSpec) -> tuple[str, str, str]:
    return event.type, event.reason, event.message


@kopf.on.event(GROUP, VERSION, PLURAL)
async def pods_indexed(memo: kopf.Memo, **_: Any) -> None:
    """kopf calls this only once every index (the pods') is filled: the reconciler's go signal.

    An event handler, not a timer: it puts no finalizer on the policy and writes nothing to it.
    """
    running = memo.get("running")
    if running is not None:
        running.pods_indexed = True
