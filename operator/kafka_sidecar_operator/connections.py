"""Broker connections saved by a policy's sidecars: measured through them, estimated without them.

Each sidecar exports the client processes it serves (``kafka_sidecar_clients``) and its
producer's broker connections that are up (``kafka_sidecar_broker_connections``, from
librdkafka's statistics). The first number is measured. What the same processes would open
without the sidecar is not: each would run a producer of its own and connect to every broker it
writes to, which we approximate by the brokers the pod's sidecar connects to for all of them.
Hence ``direct_estimate`` is an estimate, and the saving is floored at zero (one client process
per pod saves nothing; the estimate never argues for a loss).

Pure: the scraper hands the gauges over in its samples, the reconciler writes what this returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kafka_sidecar_operator.fallback import PodSample

CLIENTS = "kafka_sidecar_clients"
BROKER_CONNECTIONS = "kafka_sidecar_broker_connections"
GAUGE = re.compile(rf"^({CLIENTS}|{BROKER_CONNECTIONS})(?:\{{[^}}]*\}})? (\S+)$")
MAX_GAUGE = 1_000_000
"""A sidecar tracks at most a few thousand clients and connects to as many brokers as the
cluster has; anything larger is not a sidecar's answer, and would overflow the status' int64
once multiplied and summed."""


def sidecar_gauges(metrics_text: str) -> tuple[int, int]:
    """(client processes, broker connections) of one sidecar's /metrics; 0 for a missing gauge
    (a sidecar older than the gauge, or one whose producer has not reported statistics yet).

    Raises ValueError for a value no sidecar exports (negative, not finite, above
    ``MAX_GAUGE``): the scraper then counts a failed scrape, as for any other answer it cannot
    read.
    """
    found = {CLIENTS: 0, BROKER_CONNECTIONS: 0}
    for line in metrics_text.splitlines():
        match = GAUGE.match(line)
        if match is None:
            continue
        value = float(match.group(2))
        if not math.isfinite(value) or not 0 <= value <= MAX_GAUGE:
            raise ValueError(f"{match.group(1)} {match.group(2)} is not a sidecar's gauge")
        found[match.group(1)] = round(value)
    return found[CLIENTS], found[BROKER_CONNECTIONS]


@dataclass(frozen=True)
class ConnectionCount:
    """A policy's sidecars at one scrape: what they serve and what they hold open."""

    client_processes: int = 0
    """Client processes the sidecars serve (summed ``kafka_sidecar_clients``)."""
    through_sidecars: int = 0
    """Broker connections the sidecars hold (summed ``kafka_sidecar_broker_connections``)."""
    direct_estimate: int = 0
    """The sum over sidecars of its clients times its broker connections: each process connecting
    directly to the brokers its pod's sidecar connects to."""

    @property
    def saved(self) -> int:
        """Connections the brokers do not carry thanks to the sidecars (never below zero)."""
        return max(0, self.direct_estimate - self.through_sidecars)

    def status_fields(self) -> dict[str, int]:
        """The policy status' fields (see docs/operator.md)."""
        return {
            "clientProcesses": self.client_processes,
            "sidecarConnections": self.through_sidecars,
            "directConnectionsEstimate": self.direct_estimate,
            "connectionsSaved": self.saved,
        }


def count_connections(samples: Iterable[PodSample]) -> ConnectionCount:
    """The sums over one scrape round. Unreachable sidecars add nothing (their processes send
    directly, which fallback counts); a sidecar whose scrape failed is not among the samples."""
    processes = through = direct = 0
    for sample in samples:
        if not sample.reachable:
            continue
        processes += sample.clients
        through += sample.broker_connections
        direct += sample.clients * sample.broker_connections
    return ConnectionCount(processes, through, direct)
