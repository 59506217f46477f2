"""One event on its way from ``produce()`` to its delivery callback, and how batches are cut."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from kafka_sidecar_api.v1.sidecar_pb2 import Header, ProduceBatch

Headers = list[tuple[str, bytes | None]]
DeliveryCallback = Callable[[Any, Any], None]
ID_HEADER = "kafka-sidecar-id"


class Event:
    """What ``produce()`` was given, plus where the event is on its path."""

    __slots__ = (
        "accepted_by",
        "callback",
        "headers",
        "key",
        "partition",
        "resent",
        "sequence",
        "size",
        "started",
        "timestamp",
        "topic",
        "value",
    )

    def __init__(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int,
        timestamp: int,
        headers: Headers | None,
        callback: DeliveryCallback | None,
        size: int,
    ) -> None:
        self.topic = topic
        self.value = value
        self.key = key
        self.partition = partition
        self.timestamp = timestamp
        self.headers = headers
        self.callback = callback
        self.size = size
        self.started = monotonic()
        self.sequence = 0  # set under the producer's lock
        # The sidecar instance that accepted the event; its report stream must deliver the report.
        self.accepted_by: str | None = None
        # Sent before and possibly written: a re-send may be a duplicate.
        self.resent = False

    def id_header(self, client_id: str) -> tuple[str, bytes]:
        """The header the sidecar adds; the direct fallback adds the same one."""
        return (ID_HEADER, f"{client_id}:{self.sequence}".encode())


def add_to_batch(batch: ProduceBatch, events: list[Event]) -> None:
    """Append events to a request; one C call per plain event (None leaves a field unset)."""
    add = batch.events.add
    for e in events:
        request = add(
            topic=e.topic,
            sequence=e.sequence,
            event_bytes=e.value,
            key=e.key,
            partition=e.partition if e.partition >= 0 else None,
            timestamp_ms=e.timestamp,
        )
        if e.headers:
            request.headers.extend(
                Header(key=k) if v is None else Header(key=k, value=v) for k, v in e.headers
            )


def take_batch(queue: deque[Event], max_events: int, max_bytes: int) -> list[Event]:
    """Pop the oldest events up to the limits; always at least one, so a large event moves."""
    batch: list[Event] = []
    size = 0
    while queue and len(batch) < max_events:
        event = queue[0]
        if batch and size + event.size > max_bytes:
            break
        batch.append(queue.popleft())
        size += event.size
    return batch


def normalize_headers(headers: Any) -> Headers | None:
    """confluent accepts a dict or a list of (key, value) pairs; values str, bytes or None."""
    if headers is None:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    normalized: Headers = []
    try:
        for key, value in pairs:
            if not isinstance(key, str):
                raise TypeError(f"header key must be str, got {type(key).__name__}")
            normalized.append((key, to_bytes(value, "header value")))
    except ValueError:
        raise TypeError("headers must be a dict or a list of (str, value) tuples") from None
    return normalized


def to_bytes(value: Any, what: str) -> bytes | None:
    """str is encoded as UTF-8, like confluent-kafka does."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str, bytes or None, got {type(value).__name__}")
