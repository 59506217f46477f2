"""One event on its way from ``produce()`` to its delivery callback, and how batches are cut."""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from kafka_sidecar_api.contract import ID_HEADER
from kafka_sidecar_api.v1.sidecar_pb2 import Header, ProduceBatch

Headers = list[tuple[str, bytes | None]]
DeliveryCallback = Callable[[Any, Any], None]


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
    """confluent accepts a dict or a list of (key, value) tuples; values str, bytes or None.

    The exception types and messages are confluent-kafka's own, so an app's ``except`` clauses
    behave the same in both modes.
    """
    if headers is None:
        return None
    if isinstance(headers, dict):
        pairs: Any = headers.items()
    elif isinstance(headers, list):
        pairs = headers
        if any(not isinstance(pair, tuple) or len(pair) != 2 for pair in headers):
            raise TypeError("Headers are expected to be a list of (key, value) tuples")
    else:
        raise TypeError(
            "expected headers to be dict or list of (key, value) tuples, "
            f"not {type(headers).__name__}"
        )
    normalized: Headers = []
    for key, value in pairs:
        if not isinstance(key, str):
            raise TypeError(f"expected header key to be unicode string, not {type(key).__name__}")
        if value is None or value.__class__ is bytes:
            normalized.append((key, value))
        elif isinstance(value, str):
            normalized.append((key, value.encode()))
        else:
            raise TypeError(
                "expected header value to be None, binary, or unicode string, "
                f"not {type(value).__name__}"
            )
    return normalized


def to_bytes(value: Any, position: int) -> bytes | None:
    """A value or key as confluent takes it: bytes, str (encoded UTF-8) or None.

    ``position`` is the argument's place in ``produce()``, which confluent's message names.
    """
    if value is None or value.__class__ is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, (bytearray, memoryview)):
        raise TypeError(
            f"argument {position} must be read-only bytes-like object, not {type(value).__name__}"
        )
    raise TypeError(f"a bytes-like object is required, not {type(value).__name__!r}")


INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def to_int(value: Any, bounds: tuple[int, int]) -> int:
    """An integer argument as confluent's C layer converts it (``__index__``, range-checked)."""
    number = operator.index(value)  # TypeError: 'NoneType' object cannot be interpreted ...
    low, high = bounds
    if number > high:
        raise OverflowError("signed integer is greater than maximum")
    if number < low:
        raise OverflowError("signed integer is less than minimum")
    return int(number)


def check_topic(topic: Any) -> str:
    if topic.__class__ is not str and not isinstance(topic, str):
        name = "None" if topic is None else type(topic).__name__
        raise TypeError(f"argument 1 must be str, not {name}")
    return str(topic)
