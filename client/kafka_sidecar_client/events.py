"""One event on its way from ``produce()`` to its delivery callback, and how batches are cut."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from kafka_sidecar_api.v1.sidecar_pb2 import Header, ProduceRequest

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
        sequence: int,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int,
        timestamp: int,
        headers: Headers | None,
        callback: DeliveryCallback | None,
        started: float,
    ) -> None:
        self.sequence = sequence
        self.topic = topic
        self.value = value
        self.key = key
        self.partition = partition
        self.timestamp = timestamp
        self.headers = headers
        self.callback = callback
        self.started = started
        self.size = (len(value) if value else 0) + (len(key) if key else 0)
        # The sidecar instance that accepted the event; its report stream must deliver the report.
        self.accepted_by: str | None = None
        # Sent before and possibly written: a re-send may be a duplicate.
        self.resent = False

    def to_request(self) -> ProduceRequest:
        request = ProduceRequest(
            topic=self.topic, sequence=self.sequence, timestamp_ms=self.timestamp
        )
        if self.value is not None:
            request.event_bytes = self.value
        if self.key is not None:
            request.key = self.key
        if self.partition >= 0:
            request.partition = self.partition
        if self.headers:
            request.headers.extend(
                Header(key=k) if v is None else Header(key=k, value=v) for k, v in self.headers
            )
        return request

    def id_header(self, client_id: str) -> tuple[str, bytes]:
        """The header the sidecar adds; the direct fallback adds the same one."""
        return (ID_HEADER, f"{client_id}:{self.sequence}".encode())


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
