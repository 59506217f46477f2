"""Every KafkaSidecarPolicy the operator knows, kept whole by its own list and watch.

Not kopf's index: kopf pauses a standby replica's watches, yet every replica answers the webhook,
so each keeps this view filled itself. Pure: the watcher feeds it bodies, the webhook reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka_sidecar_operator.policies import Policy


@dataclass
class PolicyView:
    """Policies by namespace, each namespace's tuple replaced whole so a reader never sees half
    an update (the watcher writes from its thread, the webhook reads on the event loop).

    ``scopes`` are the namespaces listed separately ("" for all of them); the view is
    ``complete`` once each was listed: before that it may lack policies, and the replica is not
    ready to answer the webhook.
    """

    scopes: tuple[str, ...] = ("",)
    _by_namespace: dict[str, tuple[Policy, ...]] = field(default_factory=dict)
    _listed: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        return self._listed >= set(self.scopes)

    def replace(self, scope: str, bodies: Iterable[Mapping[str, Any]]) -> None:
        """A full list of one scope: what was known of it before is forgotten."""
        grouped: dict[str, list[Policy]] = {}
        for body in bodies:
            policy = Policy.from_body(body)
            grouped.setdefault(policy.namespace, []).append(policy)
        kept = {ns: found for ns, found in self._by_namespace.items() if scope and ns != scope}
        self._by_namespace = {**kept, **{ns: tuple(found) for ns, found in grouped.items()}}
        self._listed = self._listed | {scope}

    def apply(self, event_type: str, body: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        policy = Policy.from_body(body)
        others = tuple(
            p for p in self._by_namespace.get(policy.namespace, ()) if p.name != policy.name
        )
        current = others if event_type == "DELETED" else (*others, policy)
        by_namespace = dict(self._by_namespace)
        if current:
            by_namespace[policy.namespace] = current
        else:
            by_namespace.pop(policy.namespace, None)
        self._by_namespace = by_namespace

    def in_namespace(self, namespace: str) -> tuple[Policy, ...]:
        return self._by_namespace.get(namespace, ())

    def all(self) -> list[Policy]:
        return [p for found in self._by_namespace.values() for p in found]
