"""The client's link to its sidecar over the frames socket, and the choice between it and gRPC.

A gRPC call costs the app process about a millisecond of CPU on a small machine whatever it
carries; a frame costs a ``sendall`` and a blocking read. Two connections per process: one for
EmitBatch/health request-answer pairs (used by the sender thread only), one for the report
stream. Failures are sorted into the same exceptions as the gRPC transport's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

from google.protobuf.message import DecodeError

from kafka_sidecar_api import frames
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
    FrameError,
    ProduceBatch,
    ProduceBatchAck,
    SubscribeRequest,
)
from kafka_sidecar_client.transport import (
    SidecarBackpressure,
    SidecarRefused,
    SidecarTransport,
    SidecarUnreachable,
    Transport,
)


class FramesTransport:
    """Frames on the Unix socket ``path`` (the gRPC socket's path + ``.frames``)."""

    needs_quiesce = False  # plain sockets: a fork needs no thread to stop first

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._calls: socket.socket | None = None
        self._stream: socket.socket | None = None
        self._stream_lock = threading.Lock()

    def _connect(self, timeout: float | None) -> socket.socket:
        """A connection that has said HELLO; ``SidecarUnreachable`` if none can be made."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            connect_unix(sock, self.path, self.timeout)
            frames.send(sock, frames.HELLO, bytes((frames.VERSION,)))
            answer = frames.receive(sock)
        except (OSError, frames.FrameError) as error:
            sock.close()
            raise SidecarUnreachable(f"UNAVAILABLE: {self.path}: {error}") from None
        if answer != (frames.HELLO, bytes((frames.VERSION,))):
            sock.close()
            raise SidecarUnreachable(f"UNAVAILABLE: {self.path} did not answer HELLO")
        sock.settimeout(timeout)
        return sock

    def _call(self, kind: int, body: bytes) -> tuple[int, bytes]:
        """One request and its answer on the calls connection (sender thread only)."""
        if self._calls is None:
            self._calls = self._connect(self.timeout)
        sock = self._calls
        try:
            frames.send(sock, kind, body)
        except OSError as error:  # the sidecar went away: a partial frame is never processed
            self._drop_calls()
            raise SidecarUnreachable(f"UNAVAILABLE: {error}") from None
        try:
            answer = frames.receive(sock)
        except (OSError, frames.FrameError) as error:
            self._drop_calls()  # a late answer would be taken for the next request's
            reason = "DEADLINE_EXCEEDED" if isinstance(error, TimeoutError) else "UNAVAILABLE"
            raise SidecarUnreachable(f"{reason}: {error}", maybe_received=True) from None
        if answer is None:
            self._drop_calls()
            raise SidecarUnreachable("UNAVAILABLE: the sidecar closed", maybe_received=True)
        return answer

    @property
    def connected(self) -> bool:
        """The calls connection is open (the sidecar answered HELLO on it)."""
        return self._calls is not None

    def _drop_calls(self) -> None:
        if self._calls is not None:
            self._calls.close()
            self._calls = None

    def emit(self, request: ProduceBatch) -> ProduceBatchAck:
        kind, body = self._call(frames.EMIT_BATCH, request.SerializeToString())
        if kind == frames.EMIT_ACK:
            try:
                return ProduceBatchAck.FromString(body)
            except DecodeError:
                self._drop_calls()
                raise SidecarUnreachable("INTERNAL: a malformed EMIT_ACK", True) from None
        if kind == frames.ERROR:
            raise refusal(body)
        self._drop_calls()
        raise SidecarUnreachable(f"INTERNAL: frame type {kind} answered EMIT_BATCH", True)

    def subscribe(self, client_id: str) -> Iterator[DeliveryReportBatch]:
        """The report stream on its own connection; ends when the sidecar closes it after its
        last report, raises ``SidecarUnreachable`` when it breaks."""
        sock = self._connect(None)
        with self._stream_lock:
            self._stream = sock
        try:
            subscribe = SubscribeRequest(client_id=client_id)
            frames.send(sock, frames.SUBSCRIBE, subscribe.SerializeToString())
            while (frame := frames.receive(sock)) is not None:
                kind, body = frame
                if kind == frames.ERROR:
                    raise refusal(body)
                if kind != frames.REPORTS:
                    raise SidecarUnreachable(f"INTERNAL: frame type {kind} on the report stream")
                yield DeliveryReportBatch.FromString(body)
        except (OSError, frames.FrameError, DecodeError) as error:
            raise SidecarUnreachable(f"UNAVAILABLE: report stream: {error}") from None
        finally:
            with self._stream_lock:
                self._stream = None
            sock.close()

    def cancel_stream(self) -> None:
        """End the report stream from another thread."""
        with self._stream_lock:
            if self._stream is not None:
                with contextlib.suppress(OSError):
                    self._stream.shutdown(socket.SHUT_RDWR)

    def healthy(self) -> bool:
        """The sidecar answers HEALTH with "serving" (the probe of a client in fallback)."""
        try:
            sock = self._connect(min(self.timeout, 1.0))
        except SidecarUnreachable:
            return False
        try:
            frames.send(sock, frames.HEALTH)
            answer = frames.receive(sock)
        except (OSError, frames.FrameError):
            return False
        finally:
            sock.close()
        return answer == (frames.HEALTH_ANSWER, b"\x01")

    def release_in_child(self) -> None:
        """After a fork, in the child: close the inherited descriptors (the parent's
        connections stay open in the parent)."""
        for sock in (self._calls, self._stream):
            if sock is not None:
                sock.close()  # this process's descriptor only: no shutdown, no FIN
        self._calls = self._stream = None

    def close(self) -> None:
        self._drop_calls()
        self.cancel_stream()


def connect_unix(sock: socket.socket, path: str, timeout: float) -> None:
    """Connect, retrying while the sidecar's accept backlog is full (a Unix socket with a
    timeout answers EAGAIN at once then, instead of waiting), for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def refusal(body: bytes) -> Exception:
    """An ERROR frame as the exception the gRPC transport raises for the same status."""
    try:
        error = FrameError.FromString(body)
    except DecodeError:
        return SidecarUnreachable("INTERNAL: a malformed ERROR frame", maybe_received=True)
    if error.code == FrameError.CODE_RESOURCE_EXHAUSTED:
        return SidecarBackpressure(error.retry_after_ms / 1000)
    if error.code == FrameError.CODE_UNAVAILABLE:
        return SidecarUnreachable(f"UNAVAILABLE: {error.message}")
    return SidecarRefused(f"INVALID_ARGUMENT: {error.message}")


class AutoTransport:
    """Frames when the sidecar offers them, gRPC when only its gRPC socket is there (a sidecar
    older than the frames transport), decided again at each call, so either can be upgraded."""

    def __init__(self, address: str, timeout: float) -> None:
        path = frames.frames_path(address)
        assert path is not None, "only Unix socket addresses have a frames socket"
        self.frames = FramesTransport(path, timeout)
        self.grpc_path = path.removesuffix(frames.SUFFIX)
        self.address, self.timeout = address, timeout
        self._grpc: SidecarTransport | None = None

    @property
    def needs_quiesce(self) -> bool:
        return self._grpc is not None  # gRPC's fork handlers want no thread inside a call

    def current(self) -> Transport:
        """Looked at by every call: an open frames connection answers without a file lookup."""
        if (
            self.frames.connected
            or os.path.exists(self.frames.path)
            or not os.path.exists(self.grpc_path)
        ):
            return self.frames  # also while nothing listens: it fails fast and says so
        if self._grpc is None:
            self._grpc = SidecarTransport(self.address, self.timeout)
        return self._grpc

    def emit(self, request: ProduceBatch) -> ProduceBatchAck:
        return self.current().emit(request)

    def subscribe(self, client_id: str) -> Iterator[DeliveryReportBatch]:
        return self.current().subscribe(client_id)

    def cancel_stream(self) -> None:
        self.frames.cancel_stream()
        if self._grpc is not None:
            self._grpc.cancel_stream()

    def healthy(self) -> bool:
        return self.current().healthy()

    def release_in_child(self) -> None:
        self.frames.release_in_child()

    def close(self) -> None:
        self.frames.close()
        if self._grpc is not None:
            self._grpc.close()


def open_transport(address: str, timeout: float, kind: str = "auto") -> Transport:
    """The link a client process uses: gRPC when told to or over TCP, else frames or gRPC by
    what the sidecar offers."""
    if kind == "grpc" or frames.frames_path(address) is None:
        return SidecarTransport(address, timeout)
    return AutoTransport(address, timeout)
