"""The frames transport: the gRPC service's calls as plain frames on a second Unix socket.

A gRPC call costs the sidecar about a millisecond of CPU on a small machine, whatever it
carries; at the few events per second per process real fleets run, that was most of the pod's
CPU per event. Here a connection is served by a thread doing blocking reads and writes, which
costs tens of microseconds per frame. Answers mean exactly what the gRPC service answers
(``servicer.py``); the framing is in ``kafka_sidecar_api.frames`` and documented in the .proto.

Whoever can reach the socket is inside the pod, but its input is still checked: frame length,
message parsing, the first frame, and how many connections are served at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from kafka_sidecar.engine import Engine, Refusal
from kafka_sidecar.unix_socket import SOCKET_MODE
from kafka_sidecar_api import frames
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
    FrameError,
    ProduceBatch,
    ProduceBatchAck,
    SubscribeRequest,
)

log = logging.getLogger(__name__)

CONNECTIONS_PER_CLIENT = 2
"""A client process uses two connections: calls, and its report stream."""

CODES = {
    "UNAVAILABLE": FrameError.CODE_UNAVAILABLE,
    "RESOURCE_EXHAUSTED": FrameError.CODE_RESOURCE_EXHAUSTED,
    "INVALID_ARGUMENT": FrameError.CODE_INVALID_ARGUMENT,
}
"""Refusals (gRPC status names) as ERROR frame codes."""
GOODBYE = Refusal("UNAVAILABLE", "the sidecar has shut down; use the fallback")

IDLE_CHECK_SECONDS = 1.0
"""How often a waiting report stream looks whether its client hung up."""


def error_frame(refusal: Refusal) -> bytes:
    """An ERROR frame's body."""
    return FrameError(
        code=CODES[refusal.status],
        message=refusal.message,
        retry_after_ms=refusal.retry_after_ms,
    ).SerializeToString()


class Malformed(Exception):
    """Input that breaks the protocol: answered with ERROR (INVALID_ARGUMENT), then the
    connection is closed."""


class FramesServer:
    """Accepts on ``path`` and serves each connection on its own thread."""

    def __init__(self, engine: Engine, path: str, serving: Callable[[], bool]) -> None:
        self.engine = engine
        self.path = path
        self.serving = serving
        self.stopping = False
        self._listener: socket.socket | None = None
        # Each connection's lock orders what its thread writes with the goodbye stop() writes.
        self._connections: dict[socket.socket, threading.Lock] = {}
        self._streams: set[socket.socket] = set()
        self._lock = threading.Lock()
        # Each connection is a thread: as many as the clients the engine keeps, and no more.
        self.max_connections = CONNECTIONS_PER_CLIENT * engine.config.max_clients

    def start(self) -> None:
        Path(self.path).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, SOCKET_MODE)  # any UID of the pod, as the gRPC socket
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept_forever, name="frames-accept", daemon=True).start()

    def stop(self, streams_timeout: float = 5.0) -> None:
        """Close every connection, saying goodbye first where a client may send a request.

        A calls connection gets an unsolicited ERROR (UNAVAILABLE) and no request is processed
        after it, so a client whose request crossed the goodbye reads "not received" (use the
        fallback, no duplicate) instead of an end of stream that could mean either. Report
        streams end by themselves once their reports are sent (``Engine.close_streams``): they
        get up to ``streams_timeout`` seconds for that.
        """
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        Path(self.path).unlink(missing_ok=True)
        goodbye = error_frame(GOODBYE)
        with self._lock:
            self.stopping = True
            calls = [(c, lock) for c, lock in self._connections.items() if c not in self._streams]
        for connection, lock in calls:
            with lock, contextlib.suppress(OSError):
                frames.send(connection, frames.ERROR, goodbye)
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + streams_timeout
        while self._streams and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def _accept_forever(self) -> None:
        while self._listener is not None:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                if len(self._connections) >= self.max_connections:
                    connection.close()
                    log.warning(
                        "Refused a frames connection: %d already open (2 per client, "
                        "KAFKA_SIDECAR_MAX_CLIENTS)",
                        self.max_connections,
                    )
                    continue
                lock = self._connections[connection] = threading.Lock()
                self.engine.metrics.frames_connections.set(len(self._connections))
            threading.Thread(
                target=self._serve, args=(connection, lock), name="frames-conn", daemon=True
            ).start()

    def _serve(self, connection: socket.socket, lock: threading.Lock) -> None:
        problem = None
        try:
            self._converse(connection, lock)
        except (Malformed, frames.FrameError) as error:  # frame errors: a length, closed mid-frame
            problem = Refusal("INVALID_ARGUMENT", str(error))
        except OSError:
            pass  # the client went away: nothing to answer
        finally:
            if problem is not None:
                with lock, contextlib.suppress(OSError):
                    frames.send(connection, frames.ERROR, error_frame(problem))
            with self._lock:
                self._connections.pop(connection, None)
                self._streams.discard(connection)
                self.engine.metrics.frames_connections.set(len(self._connections))
            connection.close()

    def _converse(self, connection: socket.socket, lock: threading.Lock) -> None:
        hello = frames.receive(connection)
        if hello is None:
            return
        kind, body = hello
        if kind != frames.HELLO or body != bytes((frames.VERSION,)):
            raise Malformed(f"the first frame must be HELLO with version {frames.VERSION}")
        frames.send(connection, frames.HELLO, bytes((frames.VERSION,)))
        while (frame := frames.receive(connection)) is not None:
            kind, body = frame
            if kind == frames.SUBSCRIBE:
                client_id = parse_subscribe(body)
                with self._lock:
                    if self.stopping:
                        return
                    self._streams.add(connection)
                self._stream_reports(connection, client_id)
                return
            with lock:
                if self.stopping:
                    return  # stop() said goodbye instead of answering
                frames.send(connection, *self._answer(kind, body))

    def _answer(self, kind: int, body: bytes) -> tuple[int, bytes]:
        """The answer frame to a request frame."""
        if kind == frames.EMIT_BATCH:
            answer = self._emit(body)
            if isinstance(answer, Refusal):
                if answer.status == "INVALID_ARGUMENT":
                    raise Malformed(answer.message)  # answered, then the connection is closed
                return frames.ERROR, error_frame(answer)
            return frames.EMIT_ACK, answer.SerializeToString()
        if kind == frames.HEALTH:
            serving = self.serving() and not self.engine.draining
            return frames.HEALTH_ANSWER, b"\x01" if serving else b"\x00"
        raise Malformed(f"unknown frame type {kind}")

    def _emit(self, body: bytes) -> ProduceBatchAck | Refusal:
        """An EMIT_BATCH's answer, as the gRPC EmitBatch would give it."""
        try:
            request = ProduceBatch.FromString(body)
        except DecodeError:
            self.engine.metrics.requests.labels("EmitBatch", "INVALID_ARGUMENT").inc()
            return Refusal("INVALID_ARGUMENT", "EMIT_BATCH: not a ProduceBatch")
        return self.engine.answer(
            "EmitBatch", request.client_id, request.events, request.app, request.counters
        )

    def _stream_reports(self, connection: socket.socket, client_id: str) -> None:
        """SubscribeReports over this connection until shutdown, a newer subscription, or the
        client hanging up."""
        engine = self.engine
        wake = threading.Event()
        client, token = engine.subscribe(client_id, wake.set)
        try:
            first = DeliveryReportBatch(sidecar_id=engine.sidecar_id)
            frames.send(connection, frames.REPORTS, first.SerializeToString())
            while (messages := engine.next_messages(client, token)) is not None:
                for message in messages:
                    frames.send(connection, frames.REPORTS, message.SerializeToString())
                if messages:
                    continue
                wake.clear()
                if client.reports:  # arrived since the take
                    continue
                if not wake.wait(IDLE_CHECK_SECONDS) and hung_up(connection):
                    return
        finally:
            engine.unsubscribe(client, token)


def parse_subscribe(body: bytes) -> str:
    try:
        request = SubscribeRequest.FromString(body)
    except DecodeError:
        raise Malformed("SUBSCRIBE: not a SubscribeRequest") from None
    if not request.client_id:
        raise Malformed("client_id is required")
    return request.client_id


def hung_up(connection: socket.socket) -> bool:
    """Whether the client closed its end (a report stream's client sends nothing more)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
