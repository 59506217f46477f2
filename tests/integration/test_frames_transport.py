"""The frames socket against a real sidecar and Kafka: what the client uses, what an older sidecar
gets, and what hostile or broken input does to it (an error naming the problem, nothing else)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from kafka_sidecar_api import frames
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReport,
    DeliveryReportBatch,
    FrameError,
    ProduceBatch,
    ProduceBatchAck,
    ProduceRequest,
    SubscribeRequest,
)
from kafka_sidecar_client import Producer
from kafka_sidecar_client.frames_transport import connect_unix
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from tests import workers
from tests.support import consume_all, create_topic, wait_for

pytestmark = pytest.mark.integration
StartSidecar = Callable[..., SidecarProcess]
MAX_CLIENTS = 50  # so at most 100 frames connections
PointAt = Callable[[SidecarProcess], None]


def frames_socket(sidecar: SidecarProcess) -> str:
    path = frames.frames_path(sidecar.address)
    assert path is not None
    return path


@pytest.fixture
def connect(start_sidecar: StartSidecar) -> Iterator[Callable[[bool], socket.socket]]:
    """Raw connections to one sidecar's frames socket, HELLO already exchanged if asked."""
    sidecar = start_sidecar(KAFKA_SIDECAR_MAX_CLIENTS=str(MAX_CLIENTS))
    opened: list[socket.socket] = []

    def open_one(hello: bool = True) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        connect_unix(sock, frames_socket(sidecar), 10)
        opened.append(sock)
        if hello:
            frames.send(sock, frames.HELLO, bytes((frames.VERSION,)))
            assert frames.receive(sock) == (frames.HELLO, bytes((frames.VERSION,)))
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def expect(sock: socket.socket, kind: int) -> bytes:
    """The next frame's body, which must be of type ``kind``."""
    frame = frames.receive(sock)
    assert frame is not None, f"the connection ended before a frame of type {kind}"
    assert frame[0] == kind, frame
    return frame[1]


def refusal(sock: socket.socket) -> FrameError:
    """The ERROR frame that answers bad input, then the end of the connection."""
    error = FrameError.FromString(expect(sock, frames.ERROR))
    assert frames.receive(sock) is None, "the connection is closed after a malformed frame"
    return error


def test_the_client_uses_the_frames_socket_and_delivers_every_event_in_order(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(topic, b"warm-up")
    assert producer.flush(30) == 0
    assert metric_sum(sidecar.metrics(), "kafka_sidecar_frames_connections") == 2
    result = workers.produce_sequence(producer, topic, worker=0, count=5_000)
    assert (result["left"], result["error_count"]) == (0, 0)
    order = workers.check_order(
        [m for m in consume_all(kafka.bootstrap_servers, topic, 5_001) if m.value() != b"warm-up"],
        1,
        5_000,
    )
    assert order["duplicates"] == 0


def test_grpc_is_used_when_asked_and_when_the_sidecar_offers_no_frames_socket(
    kafka: KafkaCluster,
    start_sidecar: StartSidecar,
    sidecar_env: PointAt,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    monkeypatch.setenv("KAFKA_SIDECAR_TRANSPORT", "grpc")
    asked = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    asked.produce(topic, b"grpc")
    assert asked.flush(30) == 0
    assert metric_sum(sidecar.metrics(), "kafka_sidecar_frames_connections") == 0
    # A sidecar older than the frames transport has only its gRPC socket.
    monkeypatch.setenv("KAFKA_SIDECAR_TRANSPORT", "auto")
    os.unlink(frames_socket(sidecar))
    older = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    older.produce(topic, b"auto")
    assert older.flush(30) == 0
    assert metric_sum(sidecar.metrics(), "kafka_sidecar_frames_connections") == 0
    values = {m.value() for m in consume_all(kafka.bootstrap_servers, topic, 2)}
    assert values == {b"grpc", b"auto"}
    assert (
        metric_sum(sidecar.metrics(), "kafka_sidecar_client_events_total", outcome="fallback") == 0
    )


def test_a_first_frame_other_than_hello_is_refused_by_name(
    connect: Callable[[bool], socket.socket],
) -> None:
    sock = connect(False)
    frames.send(sock, frames.EMIT_BATCH, ProduceBatch(client_id="c").SerializeToString())
    assert "first frame must be HELLO" in refusal(sock).message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (frames.encode(frames.EMIT_BATCH, b"\xff\xff\xff"), "not a ProduceBatch"),
        (frames.encode(frames.SUBSCRIBE, b"\x0a\x05ab"), "not a SubscribeRequest"),
        (frames.encode(frames.SUBSCRIBE, b""), "client_id is required"),
        (frames.encode(frames.EMIT_BATCH, ProduceBatch().SerializeToString()), "client_id"),
        (frames.encode(42, b"x"), "unknown frame type 42"),
        (struct.pack(">I", frames.MAX_FRAME_BYTES + 1), "frame length"),
        (struct.pack(">I", 0), "frame length 0"),
    ],
)
def test_malformed_frames_get_an_error_naming_the_problem_and_the_connection_ends(
    connect: Callable[[bool], socket.socket], raw: bytes, expected: str
) -> None:
    sock = connect(True)
    sock.sendall(raw)
    error = refusal(sock)
    assert error.code == FrameError.CODE_INVALID_ARGUMENT
    assert expected in error.message


def test_broken_and_excess_connections_do_not_stop_a_good_client(
    kafka: KafkaCluster, connect: Callable[[bool], socket.socket]
) -> None:
    topic = create_topic(kafka)
    half = connect(True)
    half.sendall(struct.pack(">I", 1000) + b"\x02partial")  # and never the rest
    flood = [connect(False) for _ in range(2 * MAX_CLIENTS + 20)]
    refused = 0
    for sock in flood[-30:]:  # those past the limit are closed by the sidecar at once
        sock.settimeout(5)
        with contextlib.suppress(TimeoutError):
            refused += sock.recv(1) == b""
    assert refused >= 20
    for sock in flood:
        sock.close()

    def hello_answered() -> socket.socket | None:
        try:
            return connect(True)
        except (OSError, AssertionError):
            return None  # the sidecar has not yet seen every flooding connection close

    good = wait_for(hello_answered, timeout=30, what="a connection once the flood is gone")
    events = ProduceBatch(
        client_id="good", events=[ProduceRequest(topic=topic, sequence=1, event_bytes=b"v")]
    )
    reports = connect(True)
    frames.send(reports, frames.SUBSCRIBE, SubscribeRequest(client_id="good").SerializeToString())
    expect(reports, frames.REPORTS)  # the first, naming the sidecar
    frames.send(good, frames.EMIT_BATCH, events.SerializeToString())
    acks = ProduceBatchAck.FromString(expect(good, frames.EMIT_ACK)).acks
    assert [a.received for a in acks] == [True]
    delivered: list[DeliveryReport] = []
    while not delivered:
        delivered = list(DeliveryReportBatch.FromString(expect(reports, frames.REPORTS)).reports)
    assert [(r.sequence, r.error_code) for r in delivered] == [(1, 0)]
    half.close()


def test_a_stopping_sidecar_says_goodbye_on_calls_connections_before_closing_them(
    start_sidecar: StartSidecar,
) -> None:
    """A request crossing the shutdown reads "unavailable, not received" (no duplicate when
    re-sent), never a bare end of stream that could also mean "received, then crashed"."""
    sidecar = start_sidecar()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    with sock:
        connect_unix(sock, frames_socket(sidecar), 10)
        frames.send(sock, frames.HELLO, bytes((frames.VERSION,)))
        assert frames.receive(sock) == (frames.HELLO, bytes((frames.VERSION,)))
        sidecar.terminate()
        goodbye = FrameError.FromString(expect(sock, frames.ERROR))
        assert goodbye.code == FrameError.CODE_UNAVAILABLE
        assert "shut down" in goodbye.message
        assert frames.receive(sock) is None
    assert sidecar.wait(timeout=60) == 0


FORKING_APP = """
import os, sys, time
from kafka_sidecar_client import Producer
producer = Producer({"bootstrap.servers": sys.argv[1]})
producer.produce(sys.argv[2], b"before the fork")
assert producer.flush(30) == 0
child = os.fork()
if child == 0:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # not the test's pipes: it reads the master's output to its end
    os.dup2(null, 2)
    time.sleep(60)  # a worker that outlives the master and never produces
    os._exit(0)
print(child, flush=True)
os._exit(0)  # the master goes: its connections must close with it
"""


def test_a_forked_child_does_not_hold_its_parents_connections_open(
    kafka: KafkaCluster, start_sidecar: StartSidecar, sidecar_env: PointAt
) -> None:
    """A pre-fork master that exits must not stay connected (and subscribed) through the
    descriptors its workers inherited: the sidecar would keep serving a client that is gone."""
    topic = create_topic(kafka)
    sidecar = start_sidecar()
    sidecar_env(sidecar)
    master = subprocess.run(
        [sys.executable, "-c", FORKING_APP, kafka.bootstrap_servers, topic],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    child = int(master.stdout.split()[0])
    try:
        assert os.path.exists(f"/proc/{child}")
        wait_for(
            lambda: metric_sum(sidecar.metrics(), "kafka_sidecar_frames_connections") == 0,
            timeout=15,
            what="the master's frames connections to close while its child lives",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
