"""Delivery reports in confluent-kafka's shape: ``(err, msg)`` for the app's callbacks.

Sidecar reports and direct-fallback reports both end here, so an app's callback cannot tell
which path an event took, except by the ``kafka-sidecar-id`` header.
"""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, KafkaError

from kafka_sidecar_api.v1.sidecar_pb2 import DeliveryReport, ErrorCode
from kafka_sidecar_client.events import Event, Headers

# The librdkafka error an app would have seen from a direct producer for each sidecar refusal.
API_TO_KAFKA: dict[int, int] = {
    ErrorCode.ERROR_CODE_INVALID_REQUEST: KafkaError._INVALID_ARG,
    ErrorCode.ERROR_CODE_INVALID_TOPIC: KafkaError.TOPIC_EXCEPTION,
    ErrorCode.ERROR_CODE_TOPIC_NOT_ALLOWED: KafkaError.TOPIC_AUTHORIZATION_FAILED,
    ErrorCode.ERROR_CODE_MESSAGE_TOO_LARGE: KafkaError.MSG_SIZE_TOO_LARGE,
    ErrorCode.ERROR_CODE_INVALID_HEADERS: KafkaError._INVALID_ARG,
    ErrorCode.ERROR_CODE_UNKNOWN_PARTITION: KafkaError._UNKNOWN_PARTITION,
    ErrorCode.ERROR_CODE_INTERNAL: KafkaError._FAIL,
}


def refusal_error(code: int, message: str) -> KafkaError:
    """The KafkaError for an event the sidecar refused (never BUFFER_FULL: that is retried)."""
    return KafkaError(API_TO_KAFKA.get(code, KafkaError._FAIL), message)


def report_error(report: DeliveryReport) -> KafkaError | None:
    if report.error_code == ErrorCode.ERROR_CODE_NONE:
        return None
    if report.kafka_error_code:
        return KafkaError(report.kafka_error_code, report.error_message, retriable=report.retriable)
    return refusal_error(report.error_code, report.error_message)


class DeliveredMessage:
    """What a delivery callback receives as ``msg``: confluent's ``Message`` accessors."""

    __slots__ = ("_error", "_event", "_latency", "_offset", "_partition", "_timestamp")

    def __init__(
        self,
        event: Event,
        error: KafkaError | None,
        partition: int,
        offset: int,
        timestamp: int,
        latency: float,
    ) -> None:
        self._event = event
        self._error = error
        self._partition = partition
        self._offset = offset
        self._timestamp = timestamp
        self._latency = latency

    def topic(self) -> str:
        return self._event.topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._event.key

    def value(self) -> bytes | None:
        return self._event.value

    def headers(self) -> Headers | None:
        return self._event.headers

    def error(self) -> KafkaError | None:
        return self._error

    def latency(self) -> float:
        """Seconds from ``produce()`` to the broker's ack (or the final error)."""
        return self._latency

    def timestamp(self) -> tuple[int, int]:
        if self._timestamp > 0:
            return (TIMESTAMP_CREATE_TIME, self._timestamp)
        return (TIMESTAMP_NOT_AVAILABLE, -1)

    def __len__(self) -> int:
        return len(self._event.value or b"")

    def __repr__(self) -> str:
        return (
            f"DeliveredMessage(topic={self.topic()!r}, partition={self._partition}, "
            f"offset={self._offset}, error={self._error!r})"
        )
