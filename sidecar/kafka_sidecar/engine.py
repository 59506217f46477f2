"""The sidecar's core: one producer, the clients that send through it, their delivery reports.

``emit`` only hands events to librdkafka (no network waits); it runs on the gRPC event loop and
on the frames transport's connection threads, so the engine's client state is guarded by one
lock. A dedicated thread polls the producer, whose per-event callback appends a report tuple to
the client's ring buffer. Each report stream is woken once per poll, not once per event.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter as Tally
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from prometheus_client import Counter

from kafka_sidecar.config import SidecarConfig
from kafka_sidecar.metrics import SidecarMetrics
from kafka_sidecar.validation import (
    Rejection,
    check_headers,
    check_identity,
    check_partition,
    check_size,
    check_topic,
)
from kafka_sidecar_api.contract import ID_HEADER
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
    ErrorCode,
    ProduceBatchAck,
    ProduceRequest,
    TopicCounters,
)

log = logging.getLogger(__name__)

# (sequence, error or None, topic, partition, offset, broker timestamp ms, latency seconds)
Report = tuple[int, KafkaError | None, str, int, int, int, float]

# librdkafka errors that mean "no broker reachable in time": a Kafka outage, not a bad event.
UNAVAILABLE_ERRORS = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
    }
)


@dataclass(frozen=True)
class Refusal:
    """Why a whole call was refused; each transport says it in its own terms (a gRPC status,
    an ERROR frame). ``status`` is the gRPC status name."""

    status: str
    message: str
    retry_after_ms: int = 0


class ProducerLike(Protocol):
    """What the engine needs of ``confluent_kafka.Producer`` (a seam for unit tests)."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def __len__(self) -> int: ...


@dataclass(eq=False)
class Client:
    """One client process: what it has in the sidecar, its reports and the stream reading them.

    What a client holds is bounded by backpressure on that client (``emit`` answers BUFFER_FULL),
    so its reports are never dropped while it lives. Counters are split by who writes them
    (``accepted``, ``taken``, ``bytes_in`` under the engine's lock; ``bytes_out`` in the poll
    thread), so no count is ever updated from two threads at once.
    """

    client_id: str
    app: str
    reports: deque[Report]
    recent: list[Report]
    touched: set[Client]
    drop_counter: Counter
    dropped: int = 0  # reports that arrived after the client was forgotten
    # Wakes the stream reading the reports (from the poll thread); a newer subscription
    # replaces it, and its ``subscription`` token tells the older stream to end.
    wake: Callable[[], None] | None = None
    subscription: object | None = None
    subscribed: int = 0
    id_prefix: bytes = b""
    accepted: int = 0  # events handed to the producer
    taken: int = 0  # reports taken by its stream
    bytes_in: int = 0  # key + value bytes handed to the producer
    bytes_out: int = 0  # ... of which the producer is done with
    forgotten: bool = False

    def holding(self) -> int:
        """Events accepted whose report the client has not read yet."""
        return self.accepted - self.taken

    def in_producer(self) -> int:
        """Events still in the producer, waiting for the brokers."""
        return self.accepted - self.taken - len(self.reports)

    def delivered(self, sequence: int, size: int, err: KafkaError | None, msg: Any) -> None:
        """librdkafka's delivery callback for one event of this client (poll thread)."""
        self.bytes_out += size
        if self.forgotten:  # evicted without a reader: nobody will ask for this report
            self.dropped += 1
            self.drop_counter.inc()
            return
        report = (
            sequence,
            err,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.timestamp()[1],
            msg.latency() or 0.0,
        )
        self.reports.append(report)
        self.recent.append(report)
        self.touched.add(self)


class Engine:
    """Accepts events for the producer and routes its delivery reports back to their clients."""

    def __init__(
        self,
        producer: ProducerLike,
        config: SidecarConfig,
        metrics: SidecarMetrics,
    ) -> None:
        self.producer = producer
        self.config = config
        self.metrics = metrics
        self.lock = threading.RLock()  # the gRPC loop and the frames threads both call in
        self.clients: OrderedDict[str, Client] = OrderedDict()
        self.draining = False
        self.streams_closing = False  # shutdown: streams end once their reports are sent
        # Distinguishes this sidecar process from its predecessor for clients after a restart.
        self.sidecar_id = secrets.token_hex(8)
        self._touched: set[Client] = set()
        self._recent: list[Report] = []  # reports since the last poll, for metrics
        self._max_bytes = config.message_max_bytes
        self._valid_topics: set[str] = set()
        metrics.track_queue_depth(lambda: len(producer))

    # -- clients ----------------------------------------------------------------------------

    def client(self, client_id: str, app: str = "") -> Client:
        """The state of ``client_id``, created on first sight; the least recent is forgotten."""
        with self.lock:
            return self._client(client_id, app)

    def _client(self, client_id: str, app: str) -> Client:
        found = self.clients.get(client_id)
        if found is not None:
            self.clients.move_to_end(client_id)
            if app and not found.app:
                found.app = app
            return found
        found = Client(
            client_id=client_id,
            app=app,
            reports=deque(),
            recent=self._recent,
            touched=self._touched,
            drop_counter=self.metrics.reports_dropped,
            id_prefix=f"{client_id}:".encode(),
        )
        self.clients[client_id] = found
        while len(self.clients) > self.config.max_clients:
            victim = self._evictable(found)
            if victim is None:
                break  # every client is reading or has events at the brokers: bounded by those
            self._forget(victim.client_id)
        self.metrics.clients.set(len(self.clients))
        return found

    def _evictable(self, newest: Client) -> Client | None:
        """The least recent client nobody reads for, with nothing left at the brokers.

        One that still has unread reports goes only when no fully idle one exists: its reader
        has gone (a client that comes back resolves those events by its message timeout). A
        client pinned by a reader or by events in the producer is skipped, never a barrier.
        """
        fallback = None
        for client in self.clients.values():
            if client is newest or client.subscribed or client.in_producer():
                continue
            if not client.reports:
                return client
            if fallback is None:
                fallback = client
        return fallback

    def _forget(self, client_id: str) -> None:
        client = self.clients.pop(client_id, None)
        if client is not None:
            client.forgotten = True
            self.metrics.reports_dropped.inc(len(client.reports))
            client.reports.clear()
        self.metrics.client_counters.retire(client_id)
        self.metrics.clients.set(len(self.clients))

    def record_counters(self, client_id: str, app: str, counters: Sequence[TopicCounters]) -> None:
        """What the client counted itself (attempts, fallbacks, ...), exported per client."""
        with self.lock:
            client = self._client(client_id, app)
            for c in counters:
                self.metrics.client_counters.update(
                    client.client_id,
                    client.app,
                    c.topic,
                    (c.attempts, c.acked, c.failed, c.fallback, c.resent),
                )

    # -- emitting ---------------------------------------------------------------------------

    def answer(
        self,
        method: str,
        client_id: str,
        events: Sequence[ProduceRequest],
        app: str = "",
        counters: Sequence[TopicCounters] = (),
    ) -> ProduceBatchAck | Refusal:
        """A call's answer, whatever transport carried it: the acks, or why the call as a
        whole is refused (draining: use the fallback; no client id; nothing fitted: wait)."""
        if client_id and counters:
            self.record_counters(client_id, app, counters)
        if self.draining:
            refusal = Refusal("UNAVAILABLE", "the sidecar is shutting down; use the fallback")
        elif not client_id:
            refusal = Refusal("INVALID_ARGUMENT", "client_id is required")
        else:
            answer, buffer_full = self.emit(client_id, events)
            if not (buffer_full and events):
                self.metrics.requests.labels(method, "OK").inc()
                return answer
            retry = self.config.retry_after_ms
            refusal = Refusal(
                "RESOURCE_EXHAUSTED",
                f"the sidecar's producer buffer is full; retry in {retry} ms",
                retry,
            )
        self.metrics.requests.labels(method, refusal.status).inc()
        return refusal

    def emit(
        self, client_id: str, events: Sequence[ProduceRequest]
    ) -> tuple[ProduceBatchAck, bool]:
        """Hand ``events`` to the producer in order; answer one ack per event.

        Returns the acks and whether the buffer was full before any event was accepted (the
        servicer turns that into RESOURCE_EXHAUSTED).
        """
        with self.lock:
            return self._emit(client_id, events)

    def _emit(
        self, client_id: str, events: Sequence[ProduceRequest]
    ) -> tuple[ProduceBatchAck, bool]:
        answer = ProduceBatchAck(sidecar_id=self.sidecar_id)
        acks = answer.acks
        client = self._client(client_id, "")
        produce = self.producer.produce
        delivered = client.delivered
        prefix = client.id_prefix
        valid_topics = self._valid_topics
        max_bytes = self._max_bytes
        accepted: Tally[str] = Tally()
        full_from = -1
        room = self.config.report_buffer_size - client.holding()
        held_bytes = client.bytes_in - client.bytes_out
        byte_limit = self.config.client_max_bytes
        # The hot loop: the common event (known topic, no headers of its own, fits) skips the
        # general checks; everything else goes through ``_check`` for its precise error.
        for index, event in enumerate(events):
            sequence = event.sequence
            topic = event.topic
            value = event.event_bytes or (b"" if event.HasField("event_bytes") else None)
            key = event.key or (b"" if event.HasField("key") else None)
            partition = event.partition if event.HasField("partition") else -1
            size = len(event.event_bytes) + len(event.key)
            if room <= 0 or (held_bytes and held_bytes + size > byte_limit):
                full_from = index  # this client's share is used up: it waits, others go on
                break
            if (
                topic in valid_topics
                and sequence > 0
                and partition >= -1
                and not event.headers
                and size <= max_bytes
            ):
                rejection = None
                headers: list[tuple[str, bytes | None]] = [
                    (ID_HEADER, prefix + str(sequence).encode())
                ]
            else:
                rejection = self._check(event)
                headers = [(h.key, h.value if h.HasField("value") else None) for h in event.headers]
                headers.append((ID_HEADER, prefix + str(sequence).encode()))
            if rejection is None:
                try:
                    # Positional: confluent parses keywords at twice the cost (topic, value, key,
                    # partition, callback, on_delivery, timestamp, headers).
                    produce(
                        topic,
                        value,
                        key,
                        partition,
                        partial(delivered, sequence, size),
                        None,
                        event.timestamp_ms,
                        headers,
                    )
                except BufferError:
                    full_from = index
                    break
                except KafkaException as error:
                    rejection = produce_error(error)
                else:
                    acks.add(received=True, sequence=sequence)
                    accepted[topic] += 1
                    room -= 1
                    held_bytes += size
                    client.accepted += 1
                    client.bytes_in += size
                    continue
            self.metrics.rejected.labels(ErrorCode.Name(rejection.code)).inc()
            acks.add(
                received=False,
                sequence=sequence,
                error_code=rejection.code,
                error_message=rejection.message,
            )
        if full_from >= 0:
            retry = self.config.retry_after_ms
            for event in events[full_from:]:
                acks.add(
                    received=False,
                    sequence=event.sequence,
                    error_code=ErrorCode.ERROR_CODE_BUFFER_FULL,
                    retry_after_ms=retry,
                    error_message="the sidecar's producer buffer is full; retry later",
                )
            self.metrics.rejected.labels("ERROR_CODE_BUFFER_FULL").inc(len(events) - full_from)
        for topic, count in accepted.items():
            self.metrics.accepted.labels(self.metrics.topic_label(topic)).inc(count)
        self.metrics.emit_batch.observe(len(events))
        return answer, full_from == 0

    def _check(self, event: ProduceRequest) -> Rejection | None:
        """Every rule, in the order a user would fix them; caches topics that passed."""
        rejection = check_identity(event.sequence)
        if rejection is not None:
            return rejection
        topic = event.topic
        if topic not in self._valid_topics:
            rejection = check_topic(topic, self.config.allowed_topics)
            if rejection is not None:
                return rejection
            if len(self._valid_topics) < 10_000:
                self._valid_topics.add(topic)
        if event.headers:
            rejection = check_headers([h.key for h in event.headers])
            if rejection is not None:
                return rejection
        rejection = check_partition(event.partition if event.HasField("partition") else -1)
        if rejection is not None:
            return rejection
        size = len(event.event_bytes) + len(event.key)
        if event.headers:
            size += sum(len(h.key) + len(h.value) for h in event.headers)
        return check_size(size, self._max_bytes)

    # -- delivery reports -------------------------------------------------------------------

    def poll_forever(self, stop: threading.Event, interval: float = 0.05) -> None:
        """The poll thread: serve delivery callbacks, fold their metrics, wake report streams."""
        poll = self.producer.poll
        while not stop.is_set():
            if poll(interval):
                self.after_poll()

    def after_poll(self) -> None:
        """Fold the poll's reports into metrics and wake each touched client's stream once."""
        recent = self._recent
        if recent:
            acked: Tally[str] = Tally()
            failed: Tally[tuple[str, ErrorCode.ValueType]] = Tally()
            for _, err, topic, *_ in recent:
                if err is None:
                    acked[topic] += 1
                else:
                    failed[(topic, report_error(err)[0])] += 1
            self.metrics.latency.observe_many(report[6] for report in recent)
            recent.clear()
            label = self.metrics.topic_label
            for topic, count in acked.items():
                self.metrics.acked.labels(label(topic)).inc(count)
            for (topic, code), count in failed.items():
                self.metrics.failed.labels(label(topic), ErrorCode.Name(code)).inc(count)
        touched = list(self._touched)
        self._touched.clear()
        for client in touched:
            wake = client.wake
            if wake is not None:
                wake()

    def take_reports(self, client: Client) -> tuple[list[Report], int]:
        """Every queued report of ``client`` (it may send as many events again) and how many
        were dropped since the last take."""
        with self.lock:
            reports = client.reports
            taken = [reports.popleft() for _ in range(len(reports))]
            client.taken += len(taken)
            dropped, client.dropped = client.dropped, 0
        return taken, dropped

    def subscribe(self, client_id: str, wake: Callable[[], None]) -> tuple[Client, object]:
        """Make ``wake`` the client's stream waker; the token says whether it is still current
        (a newer subscription replaces it)."""
        token = object()
        with self.lock:
            client = self._client(client_id, "")
            client.wake, client.subscription = wake, token
            client.subscribed += 1
        self.metrics.requests.labels("SubscribeReports", "OK").inc()
        return client, token

    def next_messages(self, client: Client, token: object) -> list[DeliveryReportBatch] | None:
        """What a report stream sends next, whatever transport carries it: the client's queued
        reports as messages, [] when there is nothing yet (clear the wake, look at
        ``client.reports`` once more, then wait), or None when the stream ends: shutdown, or a
        newer subscription replaced it. (A stream's first message, before any of these, is
        ``DeliveryReportBatch(sidecar_id=...)``: it names this sidecar.)"""
        reports, dropped = self.take_reports(client)
        if reports or dropped:
            return list(report_messages(self.sidecar_id, reports, dropped))
        if self.streams_closing or client.subscription is not token:
            return None
        return []

    def unsubscribe(self, client: Client, token: object) -> None:
        with self.lock:
            client.subscribed -= 1
            if client.subscription is token:
                client.wake = client.subscription = None

    def close_streams(self) -> None:
        """Shutdown: every report stream sends what it holds, then ends."""
        self.streams_closing = True
        with self.lock:
            wakes = [c.wake for c in self.clients.values() if c.wake is not None]
        for wake in wakes:
            wake()

    def idle(self) -> bool:
        """Nothing left in the producer and no report waiting for its reader."""
        return len(self.producer) == 0 and not any(c.reports for c in self.clients.values())


def report_error(err: KafkaError) -> tuple[ErrorCode.ValueType, bool]:
    """The API error code of a failed delivery, and whether resending could succeed."""
    if err.code() in UNAVAILABLE_ERRORS:
        return ErrorCode.ERROR_CODE_KAFKA_UNAVAILABLE, True
    return ErrorCode.ERROR_CODE_KAFKA_ERROR, bool(err.retriable())


def produce_error(error: KafkaException) -> Rejection:
    """The error code for a synchronous produce() failure."""
    kafka_error: KafkaError = error.args[0]
    code = kafka_error.code()
    if code == KafkaError._UNKNOWN_PARTITION:
        return Rejection(ErrorCode.ERROR_CODE_UNKNOWN_PARTITION, f"partition: {kafka_error.str()}")
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return Rejection(ErrorCode.ERROR_CODE_MESSAGE_TOO_LARGE, kafka_error.str())
    if code == KafkaError._UNKNOWN_TOPIC:
        return Rejection(ErrorCode.ERROR_CODE_KAFKA_ERROR, f"topic: {kafka_error.str()}")
    return Rejection(ErrorCode.ERROR_CODE_INTERNAL, kafka_error.str())


MAX_REPORTS_PER_MESSAGE = 8192


def report_messages(
    sidecar_id: str, reports: list[Report], dropped: int
) -> Iterator[DeliveryReportBatch]:
    """One take of a client's reports as stream messages of bounded size; the first carries
    the count of dropped reports."""
    for start in range(0, max(len(reports), 1), MAX_REPORTS_PER_MESSAGE):
        batch = report_batch(reports[start : start + MAX_REPORTS_PER_MESSAGE])
        batch.sidecar_id = sidecar_id
        batch.dropped = dropped if start == 0 else 0
        yield batch


def report_batch(reports: list[Report]) -> DeliveryReportBatch:
    """One stream message from report tuples; built with ``add`` so protobuf works in C."""
    batch = DeliveryReportBatch()
    add = batch.reports.add
    for sequence, err, topic, partition, offset, timestamp, latency in reports:
        if err is None:
            add(
                sequence=sequence,
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=timestamp,
                latency_seconds=latency,
            )
        else:
            code, retriable = report_error(err)
            add(
                sequence=sequence,
                topic=topic,
                partition=partition,
                offset=-1,
                error_code=code,
                kafka_error_code=err.code(),
                error_message=err.str(),
                retriable=retriable,
                latency_seconds=latency,
            )
    return batch
