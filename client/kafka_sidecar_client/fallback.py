"""The direct path used while the sidecar is unreachable: a confluent producer made on demand,
and the controller that decides when to use it and when to go back.

It carries the same config as the app's, so the partitioner is the same and a key lands on the
same partition as through the sidecar; each event keeps the id header the sidecar would set.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as KafkaProducer

from kafka_sidecar_client.config import ClientSettings
from kafka_sidecar_client.counters import FALLBACK
from kafka_sidecar_client.events import Event
from kafka_sidecar_client.ledger import EventLedger

# Our own generator: a library's background thread must not advance the app's global random
# sequence (an app that seeds it for reproducibility would see different numbers).
JITTER = random.Random()  # noqa: S311 - jitter, not security

log = logging.getLogger(__name__)

OnDirectDelivery = Callable[[Event, KafkaError | None, Message | None], None]


class DirectFallback:
    """Lazily created direct producer; only a process that needs it opens broker connections."""

    def __init__(self, config: Mapping[str, Any], client_id: str) -> None:
        self.config = dict(config)
        self.client_id = client_id
        self._producer: KafkaProducer | None = None

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(self.config)
        return self._producer

    @property
    def created(self) -> bool:
        return self._producer is not None

    def send(self, event: Event, on_delivery: OnDirectDelivery) -> None:
        """Produce one event directly; waits (serving callbacks) while the local queue is full.

        A synchronous error is the event's delivery report, as an app would see it from a
        direct producer's callback-less failure: it never escapes into the sender thread.
        """
        headers: list[tuple[str, str | bytes | None]] = list(event.headers or ())
        headers.append(event.id_header(self.client_id))
        callback = functools.partial(on_delivery, event)
        while True:
            try:
                self.producer.produce(
                    event.topic,
                    event.value,
                    event.key,
                    partition=event.partition,
                    timestamp=event.timestamp,
                    headers=headers,
                    on_delivery=callback,
                )
            except BufferError:
                self.producer.poll(0.05)
                continue
            except KafkaException as error:  # MSG_SIZE_TOO_LARGE, _UNKNOWN_PARTITION, ...
                on_delivery(event, error.args[0], None)
            except Exception as error:  # never the sender thread's end
                on_delivery(event, KafkaError(KafkaError._INVALID_ARG, str(error)), None)
            return

    def pending(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks, or just wait when there is no producer yet."""
        if self._producer is not None:
            self._producer.poll(timeout)
        elif timeout > 0:
            time.sleep(timeout)


class FallbackController:
    """When the client leaves the sidecar for the direct path, what it does there, and when it
    comes back. Runs on the sender thread; ``active`` is read by it under the ledger's lock."""

    def __init__(
        self,
        settings: ClientSettings,
        ledger: EventLedger,
        direct: DirectFallback,
        healthy: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.direct = direct
        self.healthy = healthy
        self.active = False
        self.since = 0.0
        self.next_probe = 0.0
        self.failures = 0  # consecutive failed calls to the sidecar

    def call_failed(self, reason: str) -> None:
        """A call found the sidecar unreachable. One quick retry first: a connection reset (or
        gRPC's fork bookkeeping) is not an outage; two failures in a row are."""
        self.failures += 1
        if self.failures < 2:
            time.sleep(0.05)
        else:
            self.enter(reason)

    def call_succeeded(self) -> None:
        self.failures = 0

    def enter(self, reason: str) -> None:
        if self.settings.fallback == "none":
            log.warning(
                "Sidecar unreachable (%s); fallback is off, keeping events buffered", reason
            )
            time.sleep(self.settings.probe_interval_ms / 1000)
            return
        with self.ledger.lock:
            if self.active:
                return
            self.active = True
            self.since = time.monotonic()
            self.next_probe = self.since + self.probe_delay()
        log.warning(
            "Sidecar unreachable (%s); producing directly to Kafka until it is back", reason
        )

    def probe_delay(self) -> float:
        interval = self.settings.probe_interval_ms / 1000
        return interval * JITTER.uniform(0.5, 1.5)

    def step(self) -> None:
        """One round in fallback: drain what a sidecar still owes, send directly, probe."""
        now = time.monotonic()
        drain_until = self.since + self.settings.drain_timeout_ms / 1000
        with self.ledger.lock:
            # Events a sidecar accepted are never re-sent while its report stream lives: it may
            # still deliver them (a lost stream re-sends them). After the drain timeout new
            # events stop waiting for them and go direct. Those of a sidecar whose stream never
            # opened (killed before the report thread reached it) would only be re-sent when
            # another sidecar's stream opens, after newer events of their keys: they go direct
            # first, in order (possibly twice, if that sidecar delivered them after all).
            owed = [e for e in self.ledger.inflight.values() if e.accepted_by is not None]
            if owed and now >= drain_until:
                live = self.ledger.live_sidecar
                self.ledger.requeue([e for e in owed if e.accepted_by != live], resent=True)
                owed = []
            batch: list[Event] = []
            if not owed:  # keep order: nothing goes direct before what a sidecar holds
                batch = list(self.ledger.unsent)
                self.ledger.unsent.clear()
                for event in batch:
                    self.ledger.inflight[event.sequence] = event
                    self.ledger.counters.add(event.topic, FALLBACK)
            elif not self.ledger.unsent:
                self.ledger.sender_wake.wait(0.05)
        for event in batch:
            self.direct.send(event, self.delivered)
        self.direct.poll(0 if batch else 0.05)
        if time.monotonic() >= self.next_probe:
            self.probe()

    def probe(self) -> None:
        if not self.healthy():
            self.next_probe = time.monotonic() + self.probe_delay()
            return
        # Back to the sidecar only once the direct producer is empty, so no key is reordered.
        if self.direct.created:
            self.direct.producer.flush(self.settings.drain_timeout_ms / 1000)
        if self.direct.pending():
            self.next_probe = time.monotonic() + self.probe_delay()
            return
        with self.ledger.lock:
            self.active = False
            self.failures = 0
        log.info("Sidecar is back; producing through it again")

    def delivered(self, event: Event, error: KafkaError | None, message: Message | None) -> None:
        with self.ledger.lock:
            if self.ledger.inflight.pop(event.sequence, None) is None:
                return
            if message is None or error is not None:
                self.ledger.complete(event, error)
            else:
                self.ledger.complete(
                    event,
                    None,
                    message.partition() or 0,
                    message.offset() or 0,
                    message.timestamp()[1],
                )
