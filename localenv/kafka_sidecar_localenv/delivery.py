"""What reached Kafka against what the sample apps say they produced: lost, duplicated, reordered.

Each sample-app worker prints a report when it stops (``examples/producer_app.py``): per key, the
last sequence number it produced, and how many events its delivery callbacks saw fail, were left
unflushed, or were re-sent. Pure: the caller consumes the topic and collects the reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """The verdict on one topic. ``lost`` counts produced events never consumed; a producer that
    gave up on an event says so in ``failed`` or ``unflushed`` (and then it is lost too)."""

    events: int
    consumed: int
    lost: int
    duplicates: int
    reorderings: int
    failed: int
    unflushed: int
    resent: int
    buffer_waits: int
    missing_keys: list[str] = field(default_factory=list)
    # Duplicates beyond what their own worker re-sent (a re-send is the only honest source).
    unexplained_duplicates: int = 0
    # Reports that contradict themselves or another (a key claimed twice, a count that does not
    # match the keys): their sequences cannot be trusted to reveal a loss.
    bad_reports: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing given up on, and reports that can be trusted."""
        return self.lost == 0 and self.failed == 0 and self.unflushed == 0 and not self.bad_reports

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "consumed": self.consumed,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reorderings": self.reorderings,
            "failed": self.failed,
            "unflushed": self.unflushed,
            "resent": self.resent,
            "buffer_waits": self.buffer_waits,
            "missing_keys": self.missing_keys[:20],
            "unexplained_duplicates": self.unexplained_duplicates,
            "bad_reports": self.bad_reports[:20],
        }


def verify(reports: Sequence[Mapping[str, Any]], values: Iterable[bytes | None]) -> Delivery:
    """Compare the topic's record values, in partition order, with the apps' reports.

    A key's events must all be there (0 .. last), each first copy after its predecessor; a second
    copy is a duplicate (a re-send), and a first copy out of turn is a reordering."""
    last: dict[str, int] = {}
    owner: dict[str, int] = {}  # key -> index of the report that produced it
    bad: list[str] = []
    for index, report in enumerate(reports):
        name = f"{report.get('app')}/{report.get('worker')}"
        if int(report["produced"]) != sum(int(v) + 1 for v in report["last"].values()):
            bad.append(f"{name}: produced {report['produced']} is not its keys' total")
        for key, top in report["last"].items():
            if key in last:
                bad.append(f"{name}: key {key} also reported by another process")
            last[key], owner[key] = int(top), index
    seen: dict[str, set[int]] = {}
    highest: dict[str, int] = {}
    dupes = [0] * len(reports)
    consumed = duplicates = reorderings = 0
    for value in values:
        consumed += 1
        record = json.loads(value or b"{}")
        key, seq = record.get("key"), record.get("seq")
        if not isinstance(key, str) or not isinstance(seq, int):
            continue  # not the sample app's: another writer's record is not ours to judge
        got = seen.setdefault(key, set())
        if seq in got:
            duplicates += 1
            if key in owner:
                dupes[owner[key]] += 1
            continue
        if seq != highest.get(key, -1) + 1:
            reorderings += 1
        got.add(seq)
        highest[key] = max(highest.get(key, -1), seq)
    lost = 0
    missing: list[str] = []
    for key, top in sorted(last.items()):
        absent = (top + 1) - len(seen.get(key, set()) & set(range(top + 1)))
        if absent:
            lost += absent
            missing.append(key)

    def total(name: str) -> int:
        return sum(int(r.get(name, 0)) for r in reports)

    return Delivery(
        events=total("produced"),
        consumed=consumed,
        lost=lost,
        duplicates=duplicates,
        reorderings=reorderings,
        failed=total("failed"),
        unflushed=total("unflushed"),
        resent=total("resent"),
        buffer_waits=total("buffer_waits"),
        missing_keys=missing,
        unexplained_duplicates=sum(
            max(0, d - int(r.get("resent", 0))) for d, r in zip(dupes, reports, strict=True)
        ),
        bad_reports=bad,
    )
