"""Pure checks of one event before it reaches the producer, each failure a documented error code.

Kept free of gRPC and confluent-kafka so the rules read as a table and test as one.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kafka_sidecar_api.contract import ID_HEADER
from kafka_sidecar_api.v1.sidecar_pb2 import ErrorCode

# Kafka's own rule (org.apache.kafka.common.internals.Topic): 1-249 legal characters, not . or ..
TOPIC_PATTERN = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class Rejection:
    """Why an event was refused: the code clients branch on and a message naming the field."""

    code: ErrorCode.ValueType
    message: str


def check_topic(topic: str, allowed: Sequence[str] | None) -> Rejection | None:
    """A legal Kafka topic name, inside the allow-list when one is configured."""
    if not topic:
        return Rejection(ErrorCode.ERROR_CODE_INVALID_REQUEST, "topic is required")
    if topic in (".", "..") or TOPIC_PATTERN.fullmatch(topic) is None:
        return Rejection(
            ErrorCode.ERROR_CODE_INVALID_TOPIC,
            f"topic {topic[:300]!r} is not a legal Kafka topic name: 1-249 characters of "
            "a-z A-Z 0-9 . _ -, and not '.' or '..'",
        )
    if allowed is not None and not any(
        topic == pattern or fnmatch.fnmatchcase(topic, pattern) for pattern in allowed
    ):
        return Rejection(
            ErrorCode.ERROR_CODE_TOPIC_NOT_ALLOWED,
            f"topic {topic!r} is not in this sidecar's allow-list "
            f"(KAFKA_SIDECAR_ALLOWED_TOPICS={','.join(allowed)})",
        )
    return None


def check_headers(keys: Sequence[str]) -> Rejection | None:
    """Header keys must be non-empty; the id header is the sidecar's to set."""
    for index, key in enumerate(keys):
        if not key:
            return Rejection(
                ErrorCode.ERROR_CODE_INVALID_HEADERS, f"headers[{index}].key must not be empty"
            )
        if key == ID_HEADER:
            return Rejection(
                ErrorCode.ERROR_CODE_INVALID_HEADERS,
                f"headers[{index}].key {ID_HEADER!r} is reserved: the sidecar sets it",
            )
    return None


def check_size(size: int, limit: int) -> Rejection | None:
    """Key + value + headers must fit the producer's message.max.bytes."""
    if size > limit:
        return Rejection(
            ErrorCode.ERROR_CODE_MESSAGE_TOO_LARGE,
            f"event is {size} bytes (key + event_bytes + headers), larger than the producer's "
            f"message.max.bytes={limit}",
        )
    return None


def check_identity(sequence: int) -> Rejection | None:
    """Reports are matched by (client_id, sequence); the servicer checks client_id per call."""
    if sequence <= 0:
        return Rejection(
            ErrorCode.ERROR_CODE_INVALID_REQUEST, "sequence must be 1 or more (events count from 1)"
        )
    return None


def check_partition(partition: int) -> Rejection | None:
    """An explicit partition, or -1 (like confluent-kafka) / absent for the partitioner."""
    if partition < -1:
        return Rejection(
            ErrorCode.ERROR_CODE_INVALID_REQUEST,
            f"partition must be 0 or more, or -1/absent for the partitioner; got {partition}",
        )
    return None
