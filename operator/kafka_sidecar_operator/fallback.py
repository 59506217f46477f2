"""Fallback alerting: each pod's client-reported counters, turned into a ratio and an alert state.

Counters are cumulative (from the sidecars' /metrics); the ratio over the window comes from the
difference to the oldest sample inside the window. A pod whose sidecar is not ready (or whose
metrics cannot be read) counts as a pod entirely in fallback.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

AlertState = Literal["Ok", "Pending", "Firing"]
SAMPLE = re.compile(r"^kafka_sidecar_client_events_total\{([^}]*)\} (\S+)$")
DURATION = re.compile(r"([0-9]+)(s|m|h)")


def parse_duration(text: str) -> float:
    """``1h30m`` → seconds (the CRD's pattern guarantees the shape)."""
    factors = {"s": 1, "m": 60, "h": 3600}
    return float(sum(int(n) * factors[unit] for n, unit in DURATION.findall(text)))


def client_totals(metrics_text: str) -> tuple[float, float]:
    """Summed (attempts, fallback) of ``kafka_sidecar_client_events_total`` in a scrape."""
    attempts = fallback = 0.0
    for line in metrics_text.splitlines():
        match = SAMPLE.match(line)
        if not match:
            continue
        labels, value = match.group(1), float(match.group(2))
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"client counter {value} is not a finite count")
        if 'outcome="attempts"' in labels:
            attempts += value
        elif 'outcome="fallback"' in labels:
            fallback += value
    return attempts, fallback


@dataclass(frozen=True)
class PodSample:
    """One pod at one scrape: cumulative counters, or unreachable.

    The same scrape's connection gauges ride along (``clients``, ``broker_connections``, read
    by ``connections``), so the sidecar is asked once per interval for both.
    """

    pod: str
    attempts: float = 0.0
    fallback: float = 0.0
    reachable: bool = True
    clients: int = 0
    broker_connections: int = 0


@dataclass
class FallbackTracker:
    """Per policy: samples inside the window and the alert's state machine."""

    history: deque[tuple[float, dict[str, PodSample]]] = field(default_factory=deque)
    above_since: float | None = None
    state: AlertState = "Ok"
    ratio: float | None = None
    resumed: bool = False

    @classmethod
    def resume(cls, state: object, now: float, sustained_for: float) -> FallbackTracker:
        """A tracker that continues the alert state written in the policy's status (by this
        replica before a restart, or by another one before a leader change).

        The state holds until a full interval has been measured again: a restart alone must not
        clear an alert, nor lift the auto-pause it holds.
        """
        if state == "Firing":
            return cls(above_since=now - sustained_for, state="Firing", resumed=True)
        if state == "Pending":
            return cls(above_since=now, state="Pending", resumed=True)
        return cls()

    def observe(
        self,
        now: float,
        samples: Iterable[PodSample],
        window: float,
        max_ratio: float,
        sustained_for: float,
    ) -> AlertState:
        current = {s.pod: s for s in samples}
        self.history.append((now, current))
        while len(self.history) > 1 and self.history[1][0] <= now - window:
            self.history.popleft()
        oldest = self.history[0][1]
        self.ratio = window_ratio(oldest, current)
        if self.resumed and len(self.history) < 2:
            self.ratio = None  # nothing measured since the resume yet
            return self.state
        if self.ratio is not None and self.ratio > max_ratio:
            if self.above_since is None:
                self.above_since = now
            self.state = "Firing" if now - self.above_since >= sustained_for else "Pending"
        else:
            self.above_since = None
            self.state = "Ok"
        return self.state


def window_ratio(oldest: dict[str, PodSample], current: dict[str, PodSample]) -> float | None:
    """Events sent around the sidecar / events attempted, blended with unreachable pods."""
    if not current:
        return None
    attempts = fallback = 0.0
    reachable = unreachable = 0
    for pod, sample in current.items():
        if not sample.reachable:
            unreachable += 1
            continue
        reachable += 1
        before = oldest.get(pod)
        if before is None or not before.reachable or sample.attempts < before.attempts:
            before = PodSample(pod)  # new pod, or its sidecar restarted: count from zero
        attempts += sample.attempts - before.attempts
        fallback += max(0.0, sample.fallback - before.fallback)
    event_ratio = fallback / attempts if attempts else 0.0
    return (event_ratio * reachable + unreachable) / (reachable + unreachable)
