"""The client's gRPC link to its sidecar, with failures sorted into what the client does next.

``SidecarUnreachable`` → fall back; ``SidecarBackpressure`` → wait and resend; ``SidecarRefused``
→ the request itself is wrong (a bug), fail its events. One place maps status codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kafka_sidecar_api.contract import HEALTH_SERVICE
from kafka_sidecar_api.v1 import sidecar_pb2_grpc
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
    ProduceBatch,
    ProduceBatchAck,
    SubscribeRequest,
)

SERVICE = HEALTH_SERVICE
UNREACHABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
CHANNEL_OPTIONS = [
    # Come back quickly once the sidecar is up again; the default backoff reaches two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
]


class SidecarUnreachable(Exception):
    """The sidecar is down, draining or too slow: use the fallback.

    ``maybe_received``: the call may have reached the sidecar (it timed out or broke midway),
    so resending its events may duplicate them.
    """

    def __init__(self, message: str, maybe_received: bool = False) -> None:
        super().__init__(message)
        self.maybe_received = maybe_received


class SidecarBackpressure(Exception):
    """The sidecar's buffer is full: wait ``retry_after`` seconds and send again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"sidecar buffer full, retry after {retry_after:.3f}s")
        self.retry_after = retry_after


class SidecarRefused(Exception):
    """The sidecar refused the request as malformed; resending it would not help."""


class Transport(Protocol):
    """What the client's threads need of a link to the sidecar (a seam for unit tests)."""

    @property
    def needs_quiesce(self) -> bool:
        """Whether a fork must first wait for calls to end and the stream to stop."""
        ...

    def release_in_child(self) -> None:
        """After a fork, in the child: let go of what was inherited from the parent."""
        ...

    def emit(self, request: ProduceBatch) -> ProduceBatchAck: ...

    def subscribe(self, client_id: str) -> Iterator[DeliveryReportBatch]: ...

    def cancel_stream(self) -> None: ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...


class SidecarTransport:
    """One channel to the sidecar and the three calls the client makes on it."""

    needs_quiesce = True  # gRPC runs its fork handlers only when no thread is inside a call

    def __init__(self, address: str, timeout: float) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = sidecar_pb2_grpc.ProducerSidecarStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = timeout
        self.stream: Any = None

    def emit(self, request: ProduceBatch) -> ProduceBatchAck:
        try:
            answer: ProduceBatchAck = self.stub.EmitBatch(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise classify(error) from None
        return answer

    def subscribe(self, client_id: str) -> Iterator[DeliveryReportBatch]:
        """The report stream; raises ``SidecarUnreachable`` when it breaks."""
        stream = self.stub.SubscribeReports(SubscribeRequest(client_id=client_id))
        self.stream = stream
        try:
            yield from stream
        except grpc.RpcError as error:
            raise classify(error) from None
        finally:
            stream.cancel()
            self.stream = None

    def cancel_stream(self) -> None:
        """End the report stream from another thread (before a fork)."""
        stream = self.stream
        if stream is not None:
            stream.cancel()

    def healthy(self) -> bool:
        """The sidecar says SERVING (the probe a client in fallback uses to come back)."""
        try:
            answer = self.health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=min(self.timeout, 1.0)
            )
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def release_in_child(self) -> None:
        """Nothing: gRPC's own fork handlers deal with the channel."""

    def close(self) -> None:
        self.channel.close()


def classify(error: grpc.RpcError) -> Exception:
    code = error.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_ms = 50
        for key, value in error.trailing_metadata() or ():
            if key == "retry-after-ms":
                retry_ms = int(value)
        return SidecarBackpressure(retry_ms / 1000)
    if code in UNREACHABLE:
        return SidecarUnreachable(
            f"{code.name}: {error.details()}", maybe_received=code != grpc.StatusCode.UNAVAILABLE
        )
    return SidecarRefused(f"{code.name}: {error.details()}")
