"""One fault run: a fresh fleet, a warm-up, the fault, a cool-down, then the delivery verdict.

The verdict is the fleet's own: every app worker's report (what it produced per key, what it
re-sent) against every record read back from the topic. A run fails on any loss, any event an app
gave up on, any reordering, any duplicate where idempotence must leave none (or more duplicates
than re-sends), and any of the fault's own checks.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from chaos.faults import Check, Context, Fault, Observed
from chaos.fleet import Fleet
from chaos.timeline import Timeline
from kafka_sidecar_localenv.delivery import Delivery


@dataclass
class Run:
    fault: Fault
    repeat: int
    observed: Observed = field(default_factory=Observed)
    delivery: Delivery | None = None
    timeline: Timeline | None = None
    error: str | None = None
    pods: int = 0  # pods of the fleet over the run (a rolling restart adds some)
    unreported: list[str] = field(default_factory=list)
    modes: set[str] = field(default_factory=set)  # the apps' KAFKA_SIDECAR_MODE, from reports
    app_restarts: int = 0

    @property
    def checks(self) -> list[Check]:
        found = list(self.observed.checks)
        if self.delivery is not None:
            found += delivery_checks(self.delivery, self.fault.duplicates_allowed)
            found.append(
                Check(
                    "every app process reported",
                    not self.unreported,
                    f"pods without a report from each worker: {self.unreported}"
                    if self.unreported
                    else f"{self.pods} pods",
                )
            )
            found.append(
                Check(
                    "every app ran through its sidecar, none restarted",
                    self.modes == {"sidecar"} and self.app_restarts == 0,
                    f"modes {sorted(self.modes)}, {self.app_restarts} app container restarts",
                )
            )
            if self.fault.backpressure:
                found.append(
                    Check(
                        "backpressure reached the apps",
                        self.delivery.buffer_waits > 0,
                        f"produce() raised BufferError {self.delivery.buffer_waits} times",
                    )
                )
        if self.error is not None:
            found.append(Check("the run completed", False, self.error.splitlines()[-1]))
        return found

    @property
    def ok(self) -> bool:
        return self.delivery is not None and all(c.ok for c in self.checks)

    def summary(self) -> dict[str, Any]:
        return {
            "fault": self.fault.name,
            "repeat": self.repeat,
            "ok": self.ok,
            "recovery_seconds": self.observed.recovery_seconds,
            "delivery": self.delivery.as_dict() if self.delivery else None,
            "facts": self.observed.facts,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "error": self.error,
        }


def delivery_checks(delivery: Delivery, duplicates_allowed: bool) -> list[Check]:
    """Pure: what the delivery must show whatever the fault."""
    checks = [
        Check(
            "0 events lost",
            delivery.lost == 0,
            f"{delivery.lost} of {delivery.events} lost"
            + (f" (keys {delivery.missing_keys[:5]})" if delivery.missing_keys else ""),
        ),
        Check(
            "no event given up on",
            delivery.failed == 0 and delivery.unflushed == 0,
            f"{delivery.failed} failed, {delivery.unflushed} unflushed",
        ),
        Check("per-key order kept", delivery.reorderings == 0, f"{delivery.reorderings} reordered"),
        Check("events flowed", delivery.events > 0, f"{delivery.events} produced"),
    ]
    if delivery.bad_reports:
        checks.append(Check("the apps' reports agree", False, "; ".join(delivery.bad_reports[:5])))
    if duplicates_allowed:
        checks.append(
            Check(
                "every duplicate was its own worker's re-send",
                delivery.unexplained_duplicates == 0,
                f"{delivery.duplicates} duplicates, {delivery.resent} re-sent, "
                f"{delivery.unexplained_duplicates} unexplained",
            )
        )
    else:
        checks.append(
            Check(
                "no duplicates (idempotence)",
                delivery.duplicates == 0,
                f"{delivery.duplicates} duplicates, {delivery.resent} re-sent",
            )
        )
    return checks


def run_fault(ctx: Context, fault: Fault, repeat: int) -> Run:
    """The fault once, on a fleet of its own; never raises (the error is in the run)."""
    assert ctx.node.kafka is not None
    run = Run(fault, repeat)
    fleet = Fleet(ctx.node, ctx.api, fault.shape)
    try:
        fleet.start(fault.policy)
        run.timeline = Timeline(fleet, [n.port for n in ctx.node.kafka.nodes]).start()
        time.sleep(ctx.seconds(10, 6))
        run.observed = fault.inject(ctx, fleet, run.timeline)
        time.sleep(ctx.seconds(10, 5))
        run.delivery = fleet.stop()
        run.pods, run.unreported = len(fleet.seen), fleet.unreported
        run.modes, run.app_restarts = fleet.modes, fleet.app_restarts
    except Exception:  # reported as the run's failure; the suite goes on
        run.error = traceback.format_exc()
    finally:
        if run.timeline is not None:
            run.timeline.stop()
        fleet.close()
    return run
