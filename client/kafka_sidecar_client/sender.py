"""The sender thread of sidecar mode: batches from the ledger to the sidecar, answers sorted.

An accepted event waits in flight for its report; a full buffer puts events back in order and
waits; an unreachable sidecar counts towards the fallback; a refused event gets its error now.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError

from kafka_sidecar_api.v1.sidecar_pb2 import ErrorCode, ProduceBatch, TopicCounters
from kafka_sidecar_client.config import ClientSettings
from kafka_sidecar_client.delivery import refusal_error
from kafka_sidecar_client.events import Event, add_to_batch, take_batch
from kafka_sidecar_client.fallback import FallbackController
from kafka_sidecar_client.ledger import EventLedger
from kafka_sidecar_client.transport import (
    SidecarBackpressure,
    SidecarRefused,
    SidecarUnreachable,
    Transport,
)

log = logging.getLogger(__name__)


class Sender:
    """Runs on its own thread (``run``); the app's calls only set ``flushing`` and ``closed``."""

    def __init__(
        self,
        ledger: EventLedger,
        settings: ClientSettings,
        client_id: str,
        failover: FallbackController,
        rpc_gate: threading.Lock,
        ended_sidecars: set[str],
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.client_id = client_id
        self.failover = failover
        self.rpc_gate = rpc_gate  # held during a call, so a fork waits for it to end
        self.ended_sidecars = ended_sidecars  # sidecars whose report stream ended (shared)
        self.transport: Transport | None = None  # set when the threads start
        self.idle = False  # waiting for events: produce() wakes it
        self.last_send = 0.0  # monotonic time of the last call: recent means the app is busy
        self.flushing = False  # no linger while the app flushes
        self.closed = False
        # A sidecar that accepted events before its report stream opened, and since when: no
        # new event is sent until that stream opens (or another's, which re-sends them).
        self.unconfirmed: str | None = None
        self.unconfirmed_since = 0.0

    def run(self) -> None:
        while not self.closed:
            try:
                self.step()
            except Exception:
                # A bug of ours must not stop the sender: the step's own events were resolved
                # where that was possible; keep serving the others.
                log.exception("Unexpected error in the client's sender; carrying on")
                time.sleep(0.05)

    def step(self) -> None:
        """One round: expire what is overdue, then send a batch or take a fallback step."""
        with self.ledger.lock:
            if self.ledger.next_expiry is not None and time.monotonic() >= self.ledger.next_expiry:
                self.ledger.expire(time.monotonic())
            if self.failover.active:
                batch = None
            elif self._waiting_for_stream():
                return
            else:
                self._wait_for_events()
                if not self.ledger.unsent:
                    return
                batch = take_batch(
                    self.ledger.unsent,
                    self.settings.batch_max_events,
                    self.settings.batch_max_bytes,
                )
                for event in batch:  # before the call: a report may arrive before the ack
                    self.ledger.inflight[event.sequence] = event
                self.ledger.fold_attempts()
                counters = self.ledger.counters.snapshot_if_changed()
        if batch is None:
            self.failover.step()
        else:
            try:
                self.send(batch, counters)
            except Exception as error:
                self._failed(batch, error)
                raise

    def _failed(self, batch: list[Event], error: Exception) -> None:
        """An unexpected error while sending: every event of the batch no sidecar took gets an
        error report; events a sidecar accepted still get theirs from it."""
        failure = KafkaError(
            KafkaError._FAIL, f"kafka-sidecar client: {type(error).__name__}: {error}"
        )
        with self.ledger.lock:
            for event in batch:
                if (
                    event.accepted_by is None
                    and self.ledger.inflight.pop(event.sequence, None) is not None
                ):
                    self.ledger.complete(event, failure)

    def _waiting_for_stream(self) -> bool:
        """Keep per-key order across a sidecar restart (lock held).

        Events a sidecar accepted before the report thread reached it can only be confirmed by
        its stream. Were that sidecar killed meanwhile, they are re-sent when the next sidecar's
        stream opens; any newer event sent before then would land first. So sending pauses until
        the stream opens, and after the drain timeout the events are re-sent in order.
        """
        sidecar = self.unconfirmed
        if sidecar is None:
            return False
        owed = self.ledger.accepted_by(sidecar)
        if sidecar == self.ledger.live_sidecar or not owed:
            self.unconfirmed = None
            return False
        if time.monotonic() - self.unconfirmed_since >= self.settings.drain_timeout_ms / 1000:
            self.ledger.requeue(owed, resent=True)
            self.unconfirmed = None
            return False
        self.ledger.sender_wake.wait(0.01)
        return True

    def _wait_for_events(self) -> None:
        """Sleep until there is something to send; when busy, let a batch fill up first.

        Each call costs both processes far more than an event in it (gRPC's per-call and
        per-wakeup work), so a busy app sends fewer, bigger batches. The linger applies only
        when the last call left less than a linger ago: an idle app's event goes at once.
        """
        if not self.ledger.unsent and not self.closed:
            wait = 1.0  # back to the loop now and then: an event in flight may expire
            if self.ledger.next_expiry is not None:
                wait = max(0.0, min(wait, self.ledger.next_expiry - time.monotonic()))
            self.idle = True
            self.ledger.sender_wake.wait(wait)
            self.idle = False
            if not self.ledger.unsent:
                return
        linger = self.settings.linger_ms / 1000
        if (
            linger
            and not self.flushing
            and len(self.ledger.unsent) < self.settings.batch_max_events
            and time.monotonic() - self.last_send < linger
        ):
            self.ledger.sender_wake.wait(linger)

    def send(self, batch: list[Event], counters: list[TopicCounters]) -> None:
        assert self.transport is not None
        request = ProduceBatch(client_id=self.client_id, app=self.settings.app, counters=counters)
        add_to_batch(request, batch)
        try:
            with self.rpc_gate:
                self.last_send = time.monotonic()
                answer = self.transport.emit(request)
        except SidecarBackpressure as pressure:
            with self.ledger.lock:
                self.ledger.requeue(batch)
            time.sleep(pressure.retry_after)
            return
        except SidecarUnreachable as error:
            with self.ledger.lock:
                # A call that timed out may have reached the sidecar: a resend may duplicate.
                self.ledger.requeue(batch, resent=error.maybe_received)
            self.failover.call_failed(str(error))
            return
        except SidecarRefused as error:
            with self.ledger.lock:
                for event in batch:
                    if self.ledger.inflight.pop(event.sequence, None) is not None:
                        self.ledger.complete(event, KafkaError(KafkaError._INVALID_ARG, str(error)))
            return
        self.failover.call_succeeded()
        retry_after = 0.0
        with self.ledger.lock:
            sidecar = answer.sidecar_id
            for index, (event, ack) in enumerate(zip(batch, answer.acks, strict=True)):
                if ack.received:
                    event.accepted_by = sidecar
                elif ack.error_code == ErrorCode.ERROR_CODE_BUFFER_FULL:
                    self.ledger.requeue(batch[index:])
                    retry_after = ack.retry_after_ms / 1000
                    break
                elif self.ledger.inflight.pop(event.sequence, None) is not None:
                    self.ledger.complete(event, refusal_error(ack.error_code, ack.error_message))
            if sidecar in self.ended_sidecars:  # its stream ended before we heard the ack
                self.ledger.requeue([e for e in batch if e.accepted_by == sidecar], resent=True)
            elif sidecar not in (self.ledger.live_sidecar, self.unconfirmed):
                self.unconfirmed, self.unconfirmed_since = sidecar, time.monotonic()
        if retry_after:
            time.sleep(retry_after)
