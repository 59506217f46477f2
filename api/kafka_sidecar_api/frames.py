"""The frames transport's framing, shared by client and sidecar (the .proto says the protocol).

A frame is a 4-byte big-endian length, then that many bytes: one type byte and the serialized
message. Blocking sockets on both sides: a frame costs a ``sendall`` and two ``recv_into`` calls,
where a gRPC call costs each process about a millisecond of CPU.
"""

from __future__ import annotations

import socket
import struct

VERSION = 1
SUFFIX = ".frames"
"""The frames socket is the gRPC socket's path with this suffix."""

HELLO = 1
EMIT_BATCH = 2
EMIT_ACK = 3
SUBSCRIBE = 4
REPORTS = 5
HEALTH = 6
HEALTH_ANSWER = 7
ERROR = 9

MAX_FRAME_BYTES = 64 * 1024 * 1024 + 1024
"""As gRPC's message limit on both sides (64 MiB), plus the type byte and some room."""

_LENGTH = struct.Struct(">I")
CHUNK_BYTES = 1 << 20


class FrameError(Exception):
    """The peer broke the framing (closed mid-frame, or sent an impossible length)."""


def frames_path(address: str) -> str | None:
    """The frames socket for a gRPC address; None for TCP addresses (gRPC only there)."""
    if not address.startswith("unix:"):
        return None
    path = address.removeprefix("unix://").removeprefix("unix:")
    return path + SUFFIX if path else None


def encode(kind: int, body: bytes = b"") -> bytes:
    return _LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


def send(sock: socket.socket, kind: int, body: bytes = b"") -> None:
    sock.sendall(encode(kind, body))


def receive(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next frame's type and body; None when the peer closed between frames."""
    header = _read(sock, 4, at_boundary=True)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if not 1 <= length <= MAX_FRAME_BYTES:
        raise FrameError(f"frame length {length} is not within 1..{MAX_FRAME_BYTES}")
    data = _read(sock, length, at_boundary=False)
    assert data is not None
    return data[0], data[1:]


def _read(sock: socket.socket, size: int, at_boundary: bool) -> bytes | None:
    """Exactly ``size`` bytes. Memory grows with what arrives, never with what a length
    header claims: a peer announcing 64 MiB and sending nothing costs nothing."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = sock.recv(min(size - got, CHUNK_BYTES))
        if not chunk:
            if got == 0 and at_boundary:
                return None
            raise FrameError(f"connection closed {got} bytes into a {size}-byte read")
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
