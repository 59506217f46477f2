"""The frames transport's framing: addresses, round trips, and what a broken peer gets."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from kafka_sidecar_api import frames

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (
            "unix:///var/run/kafka-sidecar/sidecar.sock",
            "/var/run/kafka-sidecar/sidecar.sock.frames",
        ),
        ("unix:/tmp/s.sock", "/tmp/s.sock.frames"),
        ("127.0.0.1:50051", None),
        ("unix://", None),
    ],
)
def test_the_frames_socket_sits_next_to_the_grpc_socket(address: str, expected: str | None) -> None:
    assert frames.frames_path(address) == expected


def test_frames_round_trip_whole_however_the_bytes_arrive() -> None:
    left, right = socket.socketpair()
    with left, right:
        big = bytes(range(256)) * 5000
        wire = frames.encode(frames.EMIT_BATCH, big) + frames.encode(frames.HEALTH)

        def send_in_pieces() -> None:  # as a stream socket may deliver them
            for start in range(0, len(wire), 999):
                left.sendall(wire[start : start + 999])

        sender = threading.Thread(target=send_in_pieces)
        sender.start()
        assert frames.receive(right) == (frames.EMIT_BATCH, big)
        sender.join()
        assert frames.receive(right) == (frames.HEALTH, b"")
        left.close()
        assert frames.receive(right) is None  # closed between frames: the end, not an error


@pytest.mark.parametrize("length", [0, frames.MAX_FRAME_BYTES + 1, 2**32 - 1])
def test_an_impossible_length_is_refused_before_anything_is_read(length: int) -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack(">I", length))
        with pytest.raises(frames.FrameError, match=f"frame length {length}"):
            frames.receive(right)


def test_a_peer_that_closes_mid_frame_is_an_error_naming_how_far_it_got() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack(">I", 60_000_000) + b"\x02abc")  # 60 MB announced, 4 sent
        left.close()
        with pytest.raises(frames.FrameError, match="closed 4 bytes into a 60000000-byte read"):
            frames.receive(right)
