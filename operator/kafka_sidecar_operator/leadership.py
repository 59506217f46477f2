"""Which replica reconciles: kopf's peering rule, read from the peering object's status.

Status reconciliation runs outside kopf (a kopf timer would put a finalizer on every policy), so
it asks the same question kopf's peering asks before it pauses a replica: is another live peer of
equal or higher priority there? Pure: the caller reads the peering object.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any


def leading(
    peers: Mapping[str, Mapping[str, Any]],
    identity: str,
    priority: int,
    now: datetime.datetime,
) -> bool:
    """True when no other live peer has our priority or a higher one (kopf pauses us then)."""
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.datetime.fromisoformat(str(info.get("lastseen")))
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
            other_priority = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        if lastseen + lifetime > now and other_priority >= priority:
            return False
    return True
