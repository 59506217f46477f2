"""Per-pod override annotations (``kafka-sidecar.io/<field>``): one table, validated purely.

A bad value never blocks the pod: the webhook admits it without the sidecar and says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kafka_sidecar_operator.names import DOMAIN

CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
IMAGE = re.compile(r"^[a-z0-9]+([._\-/:@][a-zA-Z0-9_.\-]+)*$")


@dataclass(frozen=True)
class Override:
    """One override annotation: what it accepts and what it means."""

    field: str
    allowed: str
    meaning: str
    valid: Callable[[str], bool]

    @property
    def annotation(self) -> str:
        return f"{DOMAIN}/{self.field}"


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda raw: raw in values


def _int_between(low: int, high: int) -> Callable[[str], bool]:
    return lambda raw: raw.isdigit() and low <= int(raw) <= high


OVERRIDES: tuple[Override, ...] = (
    Override(
        "image",
        "an image reference",
        "the sidecar image for this pod",
        lambda raw: bool(IMAGE.match(raw)),
    ),
    Override(
        "cpu-request",
        "a CPU quantity (250m, 1)",
        "the sidecar's CPU request",
        lambda raw: bool(CPU.match(raw)),
    ),
    Override(
        "cpu-limit",
        "a CPU quantity (500m, 2)",
        "the sidecar's CPU limit",
        lambda raw: bool(CPU.match(raw)),
    ),
    Override(
        "memory-request",
        "a memory quantity (64Mi, 1Gi)",
        "the sidecar's memory request",
        lambda raw: bool(MEMORY.match(raw)),
    ),
    Override(
        "memory-limit",
        "a memory quantity (256Mi, 1Gi)",
        "the sidecar's memory limit",
        lambda raw: bool(MEMORY.match(raw)),
    ),
    Override(
        "log-level",
        "DEBUG, INFO, WARNING or ERROR",
        "the sidecar's log level",
        _one_of("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Override(
        "native",
        "true or false",
        "native sidecar (init container) or a plain container",
        _one_of("true", "false"),
    ),
    Override(
        "metrics-port",
        "an integer 1024-65535",
        "the sidecar's metrics/probe port",
        _int_between(1024, 65535),
    ),
    Override(
        "fallback", "direct or none", "the apps' KAFKA_SIDECAR_FALLBACK", _one_of("direct", "none")
    ),
    Override(
        "shutdown-grace-seconds",
        "an integer 1-600",
        "how long the sidecar flushes on SIGTERM",
        _int_between(1, 600),
    ),
)
BY_ANNOTATION = {o.annotation: o for o in OVERRIDES}


class InvalidOverride(ValueError):
    """An override annotation with a value outside its table entry."""


def read_overrides(annotations: Mapping[str, str]) -> dict[str, str]:
    """The pod's overrides by field name; the first invalid one raises naming the annotation."""
    found: dict[str, str] = {}
    for name, raw in sorted(annotations.items()):
        override = BY_ANNOTATION.get(name)
        if override is None:
            continue
        value = raw.strip()
        if not override.valid(value):
            raise InvalidOverride(
                f"annotation {name}={raw!r} is invalid: expected {override.allowed}"
            )
        found[override.field] = value
    return found
