"""Kubernetes resource quantities (``250m``, ``64Mi``, ``1e3``), parsed to compare them.

The API server rejects a pod whose request exceeds its limit, after the webhook answered: so
the webhook compares the sidecar's merged resources itself and skips instead of blocking the pod.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(raw: object) -> Decimal | None:
    """The quantity's value, or None when it is not one (no exponent above 10^18)."""
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    match = QUANTITY.match(raw.strip())
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
        if suffix in BINARY:
            return value * BINARY[suffix]
        if suffix in DECIMAL:
            return value.scaleb(DECIMAL[suffix])
        exponent = int(suffix[1:])
    except (InvalidOperation, ValueError):
        return None
    return value.scaleb(exponent) if abs(exponent) <= 18 else None


def resource_problem(resources: Mapping[str, Any]) -> str | None:
    """Why the API server would refuse these container resources, or None when it would not."""
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    if not isinstance(requests, Mapping) or not isinstance(limits, Mapping):
        return "resources.requests and resources.limits must be maps"
    for section, values in (("requests", requests), ("limits", limits)):
        for name, raw in values.items():
            value = parse_quantity(raw)
            if value is None or value < 0:
                return f"resources.{section}.{name}={raw!r} is not a quantity"
    for name, raw in requests.items():
        if name in limits:
            request, limit = parse_quantity(raw), parse_quantity(limits[name])
            if request is not None and limit is not None and request > limit:
                return f"the sidecar's {name} request {raw} would exceed its limit {limits[name]}"
    return None
