"""Emission-quality counters per topic (attempts vs broker-acked successes).

Cumulative per process; sent to the sidecar with batches, which sums them by app and topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka_sidecar_api.contract import CLIENT_OUTCOMES
from kafka_sidecar_api.v1.sidecar_pb2 import TopicCounters

ATTEMPTS, ACKED, FAILED, FALLBACK, RESENT = range(5)
NAMES = CLIENT_OUTCOMES


@dataclass
class Counters:
    """Per-topic totals; the owner's lock guards every call."""

    by_topic: dict[str, list[int]] = field(default_factory=dict)
    changed: bool = False

    def add(self, topic: str, which: int, amount: int = 1) -> None:
        row = self.by_topic.get(topic)
        if row is None:
            row = self.by_topic[topic] = [0, 0, 0, 0, 0]
        row[which] += amount
        self.changed = True

    def snapshot_if_changed(self) -> list[TopicCounters]:
        """Everything, if anything changed since the last snapshot (sent with the next batch)."""
        if not self.changed:
            return []
        self.changed = False
        return [
            TopicCounters(
                topic=topic,
                attempts=row[ATTEMPTS],
                acked=row[ACKED],
                failed=row[FAILED],
                fallback=row[FALLBACK],
                resent=row[RESENT],
            )
            for topic, row in self.by_topic.items()
        ]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {topic: dict(zip(NAMES, row, strict=True)) for topic, row in self.by_topic.items()}
