"""Sidecar mode: ``produce()`` only enqueues; threads send batches, read reports, fall back.

Per process (a fork gets a fresh instance). Where each event is lives in the ``EventLedger``
(ledger.py), the sender thread is ``Sender`` (sender.py), going direct and back is the
``FallbackController`` (fallback.py), and the link to the sidecar is a ``Transport``
(transport.py), the seam unit tests replace. This module is the app's API, the report thread,
and fork handling.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
)
from kafka_sidecar_client.config import ClientSettings, kafka_limit, message_timeout
from kafka_sidecar_client.delivery import DeliveredMessage
from kafka_sidecar_client.events import (
    INT32,
    INT64,
    DeliveryCallback,
    Event,
    check_topic,
    normalize_headers,
    to_bytes,
    to_int,
)
from kafka_sidecar_client.fallback import DirectFallback, FallbackController
from kafka_sidecar_client.frames_transport import open_transport
from kafka_sidecar_client.ledger import EventLedger
from kafka_sidecar_client.sender import Sender
from kafka_sidecar_client.transport import SidecarUnreachable, Transport

log = logging.getLogger(__name__)

# Client threads that ended on an unexpected error, by thread name (there should be none).
THREAD_DEATHS: dict[str, int] = {}
TransportFactory = Callable[[str, float], Transport]


class SidecarMode:
    """The per-process machinery behind a sidecar-mode ``Producer``."""

    def __init__(
        self,
        config: Mapping[str, Any],
        settings: ClientSettings,
        default_callback: DeliveryCallback | None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.settings = settings
        self.transport_factory = transport_factory
        self.default_callback = default_callback
        self.client_id = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.max_outstanding = kafka_limit(config, "queue.buffering.max.messages", 100_000)
        self.max_message_bytes = kafka_limit(config, "message.max.bytes", 1_000_000)
        # The app's own delivery deadline, as librdkafka applies it (None: no deadline).
        self.message_timeout = message_timeout(config)
        self.ledger = EventLedger(self.message_timeout)
        self.lock = self.ledger.lock
        self.dead: str | None = None  # why a thread of ours ended; produce() then refuses
        self.ended_sidecars: set[str] = set()
        self.closed = False
        self.started = False
        self.fallback = DirectFallback(config, self.client_id)
        self.failover = FallbackController(settings, self.ledger, self.fallback, self._healthy)
        # Fork safety: gRPC runs its fork handlers only when no thread is inside a call, so
        # before a fork the sender finishes its call and the report stream is cancelled.
        self.rpc_gate = threading.Lock()
        self.forking = threading.Event()
        self.streaming = threading.Event()
        self._gate_held = False
        self.transport: Transport | None = None
        self.sender = Sender(
            self.ledger, settings, self.client_id, self.failover, self.rpc_gate, self.ended_sidecars
        )

    # -- the app's calls --------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int = -1,
        on_delivery: DeliveryCallback | None = None,
        callback: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        """confluent's ``produce()``: only enqueues; the sender thread does the rest.

        Arguments are checked in confluent's order with its exception types, so nothing the
        sender cannot encode is ever queued.
        """
        if self.dead is not None:
            raise KafkaException(KafkaError(KafkaError._FAIL, self.dead))
        if self.closed:
            raise RuntimeError("Producer has been closed")
        if topic.__class__ is not str:
            topic = check_topic(topic)
        if value.__class__ is not bytes and value is not None:
            value = to_bytes(value, 2)
        if key.__class__ is not bytes and key is not None:
            key = to_bytes(key, 3)
        if partition.__class__ is not int or not -1 <= partition <= INT32[1]:
            partition = to_int(partition, INT32)
        if timestamp.__class__ is not int or not INT64[0] <= timestamp <= INT64[1]:
            timestamp = to_int(timestamp, INT64)
        if headers is not None:
            headers = normalize_headers(headers)
        size = (len(value) if value else 0) + (len(key) if key else 0)
        if size > self.max_message_bytes:
            raise KafkaException(
                KafkaError(
                    KafkaError.MSG_SIZE_TOO_LARGE,
                    f"Message size {size} exceeds message.max.bytes {self.max_message_bytes}",
                )
            )
        event = Event(
            topic,
            value,
            key,
            partition,
            timestamp,
            headers,
            on_delivery or callback or self.default_callback,
            size,
        )
        with self.lock:
            if self.ledger.outstanding >= self.max_outstanding:
                raise BufferError("Local: Queue full")
            event.sequence = self.ledger.next_sequence
            self.ledger.next_sequence += 1
            self.ledger.unsent.append(event)
            self.ledger.outstanding += 1
            self.ledger.attempts[topic] = self.ledger.attempts.get(topic, 0) + 1
            if self.ledger.next_expiry is None and self.message_timeout is not None:
                self.ledger.next_expiry = event.started + self.message_timeout
            if self.sender.idle:
                self.ledger.sender_wake.notify()
        if not self.started:
            self._start()

    def poll(self, timeout: float | None = None) -> int:
        """Run the callbacks of resolved events; wait up to ``timeout`` for one (None: forever)."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self.lock:
            while not self.ledger.completions:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return 0
                self.ledger.pollers += 1
                self.ledger.poller_wake.wait(remaining)
                self.ledger.pollers -= 1
            ready, self.ledger.completions = self.ledger.completions, deque()
            self.ledger.outstanding -= len(ready)
        served = 0
        try:
            for event, error, partition, offset, timestamp, latency in ready:
                served += 1
                if event.callback is not None:
                    event.callback(
                        error, DeliveredMessage(event, error, partition, offset, timestamp, latency)
                    )
        finally:
            if served < len(ready):  # a callback raised: keep the rest for the next poll
                rest = list(ready)[served:]
                with self.lock:
                    self.ledger.completions.extendleft(reversed(rest))
                    self.ledger.outstanding += len(rest)
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every event is resolved and its callback ran; returns how many are left."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self.lock:
            self.sender.flushing = True
            self.ledger.sender_wake.notify()
        try:
            while True:
                with self.lock:
                    if self.ledger.outstanding == 0:
                        return 0
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    with self.lock:
                        return self.ledger.outstanding
                self.poll(0.1 if remaining is None else min(remaining, 0.1))
        finally:
            self.sender.flushing = False

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        """Drop events like confluent's purge(); their callbacks report _PURGE_QUEUE/INFLIGHT."""
        self.ledger.purge(in_queue, in_flight)
        if self.fallback.created:
            self.fallback.producer.purge(in_queue, in_flight, blocking)

    def __len__(self) -> int:
        return self.ledger.outstanding

    def close(self) -> bool:
        """confluent's ``close()``: flush, then stop; ``produce()`` raises afterwards."""
        if self.closed:
            return True
        self.flush(self.message_timeout)  # every event is resolved by then
        with self.lock:
            self.closed = self.sender.closed = True
            self.ledger.sender_wake.notify_all()
        if self.transport is not None:
            self.transport.close()
        if self.fallback.created:
            self.fallback.producer.close()
        return True

    def counter_totals(self) -> dict[str, dict[str, int]]:
        with self.lock:
            self.ledger.fold_attempts()
            return self.ledger.counters.as_dict()

    # -- fork -------------------------------------------------------------------------------

    def quiesce(self) -> None:
        """Before ``fork()``: no thread of ours inside gRPC, so its fork handlers can run."""
        if not self.started or self.transport is None or not self.transport.needs_quiesce:
            return
        self.forking.set()
        self._gate_held = self.rpc_gate.acquire(timeout=self.settings.rpc_timeout_ms / 1000 + 1)
        deadline = time.monotonic() + 2
        while self.streaming.is_set() and time.monotonic() < deadline:
            self.transport.cancel_stream()
            time.sleep(0.002)

    def release_in_child(self) -> None:
        """After ``fork()``, in the child: close what the parent's transport left open here."""
        if self.transport is not None:
            self.transport.release_in_child()

    def resume(self) -> None:
        """After ``fork()``, in the parent."""
        if self._gate_held:
            self._gate_held = False
            self.rpc_gate.release()
        self.forking.clear()

    # -- threads ----------------------------------------------------------------------------

    def _start(self) -> None:
        with self.lock:
            if self.started:
                return
            self.started = True
        address, timeout = self.settings.address, self.settings.rpc_timeout_ms / 1000
        if self.transport_factory is not None:  # a test seam
            self.transport = self.transport_factory(address, timeout)
        else:
            self.transport = open_transport(address, timeout, self.settings.transport)
        self.sender.transport = self.transport
        for target, name in ((self.sender.run, "sender"), (self._report_loop, "reports")):
            threading.Thread(
                target=self._guarded,
                args=(target, name),
                name=f"kafka-sidecar-{name}",
                daemon=True,
            ).start()

    def _guarded(self, loop: Callable[[], None], name: str) -> None:
        """Run a thread's loop; should it ever end on an error, say so and fail what is pending.

        Without this a dead thread leaves ``produce()`` accepting events nobody sends.
        """
        try:
            loop()
        except BaseException as error:
            reason = f"the client's {name} thread ended on {type(error).__name__}: {error}"
            log.exception("Client thread %s died; failing every pending event", name)
            THREAD_DEATHS[name] = THREAD_DEATHS.get(name, 0) + 1
            with self.lock:
                self.dead = reason
                self.ledger.fail_everything(KafkaError(KafkaError._FAIL, reason))

    def _report_loop(self) -> None:
        assert self.transport is not None
        backoff = 0.05
        while not self.closed:
            if self.forking.is_set():
                time.sleep(0.005)
                continue
            sidecar = None
            self.streaming.set()
            try:
                for batch in self.transport.subscribe(self.client_id):
                    if sidecar is None:
                        sidecar = batch.sidecar_id
                        self._stream_started(sidecar)
                        backoff = 0.05
                    self._resolve(batch)
            except SidecarUnreachable:
                pass
            except Exception:
                # A bug of ours while resolving: treat the stream as lost (its events are
                # re-sent) rather than let the thread die.
                log.exception("Unexpected error reading delivery reports; reconnecting")
            finally:
                self.streaming.clear()
            if self.forking.is_set():
                continue  # cancelled for a fork, not lost: the same sidecar still has the reports
            if sidecar is not None:
                self._stream_ended(sidecar)
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    # -- resolution -------------------------------------------------------------------------

    def _resolve(self, batch: DeliveryReportBatch) -> None:
        if batch.dropped:
            # Sidecars bound reports by backpressure and do not drop them; an older one might.
            # Those events resolve at the app's message.timeout.ms with _MSG_TIMED_OUT.
            log.warning(
                "The sidecar dropped %d delivery report(s) for %s: their events time out",
                batch.dropped,
                self.client_id,
            )
        if batch.reports:
            self.ledger.resolve(batch.reports)

    def _stream_started(self, sidecar: str) -> None:
        """Events another sidecar accepted will never be reported on this stream: resend them."""
        with self.lock:
            self.ledger.live_sidecar = sidecar
            self.ended_sidecars.discard(sidecar)
            orphans = [
                e
                for e in self.ledger.inflight.values()
                if e.accepted_by is not None and e.accepted_by != sidecar
            ]
            self.ledger.requeue(orphans, resent=True)

    def _stream_ended(self, sidecar: str) -> None:
        """A sidecar ends its stream after delivering everything; what is left was lost with it."""
        with self.lock:
            if self.ledger.live_sidecar == sidecar:
                self.ledger.live_sidecar = None
            self.ended_sidecars.add(sidecar)
            orphans = self.ledger.accepted_by(sidecar)
            if orphans:
                log.warning(
                    "Lost the report stream of sidecar %s with %d event(s) unreported; "
                    "re-sending them (possible duplicates)",
                    sidecar,
                    len(orphans),
                )
            self.ledger.requeue(orphans, resent=True)

    def _healthy(self) -> bool:
        """The fallback's probe: is the sidecar serving again? (never inside a fork)"""
        assert self.transport is not None
        with self.rpc_gate:
            return self.transport.healthy()
