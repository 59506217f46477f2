"""Where every event of a sidecar-mode producer is until the app's callback has run.

Every unresolved event is in exactly one of ``unsent`` (waiting to be sent, in sequence order)
or ``inflight`` (sent to a sidecar or to the direct fallback, waiting for its report); a resolved
event waits in ``completions`` until the app's ``poll()`` runs its callback. ``inflight`` is the
truth: a report for an event no longer there (purged, expired, re-sent) is ignored, so no event
gets two callbacks. One lock guards it all; methods that say "lock held" expect the caller's.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError

from kafka_sidecar_api.v1.sidecar_pb2 import DeliveryReport
from kafka_sidecar_client.counters import ACKED, ATTEMPTS, FAILED, RESENT, Counters
from kafka_sidecar_client.delivery import report_error
from kafka_sidecar_client.events import Event

# (event, error, partition, offset, broker timestamp ms, latency seconds)
Completion = tuple[Event, KafkaError | None, int, int, int, float]


class EventLedger:
    """The per-process event state the app's calls and the client's threads share."""

    def __init__(self, message_timeout: float | None) -> None:
        self.lock = threading.Lock()
        self.sender_wake = threading.Condition(self.lock)
        self.poller_wake = threading.Condition(self.lock)
        self.unsent: deque[Event] = deque()
        self.inflight: dict[int, Event] = {}
        self.completions: deque[Completion] = deque()
        self.outstanding = 0  # produced and callback not yet run
        self.next_sequence = 1
        self.counters = Counters()
        self.attempts: dict[str, int] = {}  # per topic; folded into counters by the sender
        self.pollers = 0
        self.message_timeout = message_timeout
        self.next_expiry: float | None = None  # nothing can expire before this
        # The sidecar whose report stream is open: only its reports can resolve what it accepted.
        self.live_sidecar: str | None = None

    def resolve(self, reports: Sequence[DeliveryReport]) -> None:
        """Resolve the events a sidecar reported; reports for unknown events are ignored."""
        now = time.monotonic()
        with self.lock:
            inflight = self.inflight
            for report in reports:
                event = inflight.pop(report.sequence, None)
                if event is None:
                    continue
                error = None if report.error_code == 0 else report_error(report)
                self.completions.append(
                    (
                        event,
                        error,
                        report.partition,
                        report.offset,
                        report.timestamp_ms,
                        now - event.started,
                    )
                )
                self.counters.add(event.topic, ACKED if error is None else FAILED)
            if self.pollers:
                self.poller_wake.notify_all()

    def complete(
        self,
        event: Event,
        error: KafkaError | None,
        partition: int = -1,
        offset: int = -1,
        timestamp: int = 0,
    ) -> None:
        """Resolve one event (lock held)."""
        self.completions.append(
            (event, error, partition, offset, timestamp, time.monotonic() - event.started)
        )
        self.counters.add(event.topic, ACKED if error is None else FAILED)
        if self.pollers:
            self.poller_wake.notify_all()

    def requeue(self, events: Iterable[Event], resent: bool = False) -> None:
        """Put events still in flight back in front of ``unsent``, in sequence order (lock held)."""
        back = []
        for event in events:
            if self.inflight.pop(event.sequence, None) is not None:
                if resent and not event.resent:
                    event.resent = True
                    self.counters.add(event.topic, RESENT)
                event.accepted_by = None
                back.append(event)
        if back:
            back.sort(key=lambda e: e.sequence)
            self.unsent = deque(heapq.merge(back, self.unsent, key=lambda e: e.sequence))
            self.sender_wake.notify()

    def accepted_by(self, sidecar: str | None) -> list[Event]:
        """In-flight events ``sidecar`` accepted (lock held); a scan, for the rare moments a
        sidecar changes."""
        return [e for e in self.inflight.values() if e.accepted_by == sidecar]

    def expire(self, now: float) -> None:
        """Resolve events older than the app's message.timeout.ms with _MSG_TIMED_OUT, as
        librdkafka does (lock held). A sidecar's late report for one is then ignored."""
        assert self.message_timeout is not None
        cutoff = now - self.message_timeout
        oldest: float | None = None
        expired: list[Event] = []
        for event in (*self.unsent, *self.inflight.values()):
            if event.started <= cutoff:
                expired.append(event)
            elif oldest is None or event.started < oldest:
                oldest = event.started
        if expired:
            timed_out = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
            gone = {id(e) for e in expired}
            self.unsent = deque(e for e in self.unsent if id(e) not in gone)
            for event in expired:
                self.inflight.pop(event.sequence, None)
                self.complete(event, timed_out)
        # Nothing outstanding can expire before the oldest of it; later events start later.
        self.next_expiry = None if oldest is None else oldest + self.message_timeout

    def fail_everything(self, error: KafkaError) -> None:
        """Resolve every unresolved event with ``error`` (lock held)."""
        for event in self.unsent:
            self.complete(event, error)
        self.unsent.clear()
        for event in list(self.inflight.values()):
            self.complete(event, error)
        self.inflight.clear()

    def fold_attempts(self) -> None:
        """Move produce()'s cheap per-topic tallies into the counters (lock held)."""
        for topic, count in self.attempts.items():
            self.counters.add(topic, ATTEMPTS, count)
        self.attempts.clear()

    def purge(self, in_queue: bool, in_flight: bool) -> None:
        """confluent's purge codes: unsent events _PURGE_QUEUE, sent ones _PURGE_INFLIGHT."""
        with self.lock:
            if in_queue:
                for event in self.unsent:
                    self.complete(event, KafkaError(KafkaError._PURGE_QUEUE))
                self.unsent.clear()
            if in_flight:
                for event in list(self.inflight.values()):
                    self.complete(event, KafkaError(KafkaError._PURGE_INFLIGHT))
                self.inflight.clear()
