"""Sidecar mode's threads against a scripted transport: no event without exactly one callback."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as ConfluentProducer

from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReport,
    DeliveryReportBatch,
    ErrorCode,
    ProduceBatch,
    ProduceBatchAck,
)
from kafka_sidecar_client import sidecar_mode
from kafka_sidecar_client.config import ClientSettings
from kafka_sidecar_client.events import Event
from kafka_sidecar_client.fallback import DirectFallback, FallbackController
from kafka_sidecar_client.ledger import EventLedger
from kafka_sidecar_client.sender import Sender
from kafka_sidecar_client.sidecar_mode import SidecarMode
from kafka_sidecar_client.transport import SidecarUnreachable, classify
from tests.unit.scripted_sidecar import NOWHERE, ScriptedSidecar

pytestmark = pytest.mark.unit


@pytest.fixture
def sidecar() -> Iterator[ScriptedSidecar]:
    scripted = ScriptedSidecar()
    yield scripted
    scripted.closed.set()


def make_mode(
    transport: ScriptedSidecar, env: dict[str, str] | None = None, **config: Any
) -> SidecarMode:
    settings = ClientSettings.from_env(
        {"KAFKA_SIDECAR_MODE": "sidecar", "KAFKA_SIDECAR_FALLBACK": "none", **(env or {})}
    )
    return SidecarMode({"bootstrap.servers": NOWHERE, **config}, settings, None, transport)


class Callbacks:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes | None, KafkaError | None]] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        self.seen.append((msg.value(), err))

    def codes(self) -> list[int | None]:
        return [None if err is None else err.code() for _, err in self.seen]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topic": "t", "partition": None},
        {"topic": "t", "partition": 1.5},
        {"topic": "t", "partition": 2**40},
        {"topic": "t", "partition": -(2**40)},
        {"topic": 1},
        {"topic": None},
        {"topic": "t", "value": 1},
        {"topic": "t", "key": 1.0},
        {"topic": "t", "value": bytearray(b"x")},
        {"topic": "t", "value": memoryview(b"x")},
        {"topic": "t", "timestamp": None},
        {"topic": "t", "timestamp": "x"},
        {"topic": "t", "timestamp": 2**70},
        {"topic": "t", "headers": 1},
        {"topic": "t", "headers": (("a", b"1"),)},
        {"topic": "t", "headers": [("a",)]},
        {"topic": "t", "headers": [["a", b"1"]]},
        {"topic": "t", "headers": {"a": 1}},
        {"topic": "t", "headers": [("a", bytearray(b"1"))]},
        {"topic": "t", "unknown": 1},
        {},
    ],
    ids=repr,
)
def test_invalid_produce_arguments_raise_what_confluent_raises(
    sidecar: ScriptedSidecar, kwargs: dict[str, Any]
) -> None:
    confluent = ConfluentProducer({"bootstrap.servers": NOWHERE})
    with pytest.raises(Exception) as theirs:  # noqa: PT011 - the type is what we compare
        confluent.produce(**kwargs)
    mode = make_mode(sidecar)
    with pytest.raises(Exception) as ours:  # noqa: PT011
        mode.produce(**kwargs)
    assert type(ours.value) is type(theirs.value)
    assert len(mode) == 0  # nothing queued that the sender could choke on


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topic": "t", "partition": True},
        {"topic": "t", "value": "é", "key": "k"},
        {"topic": "t", "headers": {"a": "s", "b": None}},
        {"topic": "t", "headers": [("a", b"1")]},
        {"topic": "t", "timestamp": -1},
        {"topic": "t", "on_delivery": None, "callback": None},
    ],
    ids=repr,
)
def test_arguments_confluent_accepts_are_accepted(
    sidecar: ScriptedSidecar, kwargs: dict[str, Any]
) -> None:
    mode = make_mode(sidecar)
    mode.produce(**kwargs)
    assert mode.flush(5) == 0


def test_an_unexpected_error_while_sending_fails_that_batch_and_the_sender_carries_on(
    sidecar: ScriptedSidecar,
) -> None:
    calls = []

    def fail_first(request: ProduceBatch) -> None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("boom")

    sidecar.emit_hook = fail_first
    mode = make_mode(sidecar)
    seen = Callbacks()
    mode.produce("t", b"first", on_delivery=seen)
    assert mode.flush(5) == 0
    mode.produce("t", b"second", on_delivery=seen)
    assert mode.flush(5) == 0
    assert seen.codes() == [KafkaError._FAIL, None]
    assert "RuntimeError: boom" in str(seen.seen[0][1])


def test_a_thread_that_dies_fails_every_pending_event_and_produce_raises(
    sidecar: ScriptedSidecar,
) -> None:
    died = threading.Event()

    def die() -> None:
        died.set()
        raise SystemExit  # not an Exception: nothing inside the loop catches it

    sidecar.report = False
    mode = make_mode(sidecar)
    seen = Callbacks()
    mode.produce("t", b"pending", on_delivery=seen)
    assert mode.flush(0.3) == 1
    sidecar.subscribe_hook = die
    sidecar.closed.set()  # ends the stream: the report thread resubscribes and dies
    assert died.wait(5)
    assert mode.flush(5) == 0
    assert seen.codes() == [KafkaError._FAIL]
    with pytest.raises(KafkaException, match="reports thread ended"):
        mode.produce("t", b"refused")
    assert sidecar_mode.THREAD_DEATHS.get("reports", 0) >= 1


def test_an_event_past_the_apps_message_timeout_is_resolved_with_msg_timed_out(
    sidecar: ScriptedSidecar,
) -> None:
    sidecar.report = False  # the sidecar accepted it and never reports
    mode = make_mode(sidecar, **{"message.timeout.ms": 300})
    seen = Callbacks()
    mode.produce("t", b"late", on_delivery=seen)
    assert mode.flush(5) == 0
    assert seen.codes() == [KafkaError._MSG_TIMED_OUT]


def test_delivery_timeout_ms_is_the_same_setting(sidecar: ScriptedSidecar) -> None:
    sidecar.report = False
    mode = make_mode(sidecar, **{"delivery.timeout.ms": 300})
    mode.produce("t", b"late")
    assert mode.flush(5) == 0


def test_a_synchronous_error_of_the_direct_fallback_becomes_the_events_report() -> None:
    fallback = DirectFallback({"bootstrap.servers": NOWHERE, "message.max.bytes": 1000}, "c")
    event = Event("t", b"x" * 5000, None, -1, 0, None, None, 5000)
    event.sequence = 1
    reported: list[tuple[Event, KafkaError | None]] = []
    fallback.send(event, lambda e, err, msg: reported.append((e, err)))
    assert len(reported) == 1
    assert reported[0][1] is not None
    assert reported[0][1].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_events_a_live_sidecar_accepted_are_not_resent_while_new_ones_go_direct(
    sidecar: ScriptedSidecar,
) -> None:
    sidecar.report = False
    mode = make_mode(
        sidecar, {"KAFKA_SIDECAR_FALLBACK": "direct", "KAFKA_SIDECAR_DRAIN_TIMEOUT_MS": "100"}
    )
    seen = Callbacks()
    mode.produce("t", b"accepted", on_delivery=seen)
    assert mode.flush(0.3) == 1  # accepted, report pending
    sidecar.unreachable = True  # new calls fail; the report stream lives on
    mode.produce("t", b"new", on_delivery=seen)
    deadline = time.monotonic() + 5
    while mode.fallback.pending() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mode.fallback.pending() == 1  # only the new event went direct
    sidecar.reports.put(
        DeliveryReportBatch(sidecar_id="s1", reports=[DeliveryReport(sequence=1, topic="t")])
    )
    mode.poll(5)
    assert seen.seen == [(b"accepted", None)]
    assert mode.counter_totals()["t"]["resent"] == 0
    mode.purge()  # the new event, still at the unreachable broker
    mode.poll(0)
    assert mode.close()  # and no direct producer outlives the test


class FailedCall(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "scripted"

    def trailing_metadata(self) -> tuple[()]:
        return ()


@pytest.mark.parametrize(
    ("code", "maybe_received"),
    [
        (grpc.StatusCode.UNAVAILABLE, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.CANCELLED, True),
        (grpc.StatusCode.INTERNAL, True),
    ],
)
def test_a_call_that_may_have_reached_the_sidecar_marks_its_resend_as_a_duplicate(
    code: grpc.StatusCode, maybe_received: bool
) -> None:
    error = classify(FailedCall(code))
    assert isinstance(error, SidecarUnreachable)
    assert error.maybe_received is maybe_received


def controller(fallback: str = "direct", healthy: bool = True) -> FallbackController:
    settings = ClientSettings.from_env(
        {"KAFKA_SIDECAR_FALLBACK": fallback, "KAFKA_SIDECAR_PROBE_INTERVAL_MS": "1"}
    )
    direct = DirectFallback({"bootstrap.servers": NOWHERE}, "c")
    return FallbackController(settings, EventLedger(None), direct, lambda: healthy)


def test_two_failed_calls_in_a_row_switch_to_the_direct_path() -> None:
    control = controller()
    control.call_failed("reset")
    control.call_succeeded()
    control.call_failed("reset")
    assert not control.active  # one failure after a success is a reset, not an outage
    control.call_failed("down")
    assert control.active


def test_with_fallback_none_the_client_never_goes_direct() -> None:
    control = controller(fallback="none")
    for _ in range(3):
        control.call_failed("down")
    assert not control.active


def test_a_healthy_probe_with_an_empty_direct_producer_returns_to_the_sidecar() -> None:
    control = controller(healthy=True)
    control.enter("down")
    control.probe()
    assert not control.active
    unhealthy = controller(healthy=False)
    unhealthy.enter("down")
    unhealthy.probe()
    assert unhealthy.active


class PartlyFull(ScriptedSidecar):
    """Accepts the first event of a batch, answers BUFFER_FULL for the rest, refuses 'bad'."""

    def emit(self, request: ProduceBatch) -> ProduceBatchAck:
        answer = ProduceBatchAck(sidecar_id="s1")
        for index, event in enumerate(request.events):
            if event.topic == "bad":
                answer.acks.add(
                    sequence=event.sequence, error_code=ErrorCode.ERROR_CODE_INVALID_TOPIC
                )
            elif index == 0:
                answer.acks.add(received=True, sequence=event.sequence)
            else:
                answer.acks.add(
                    sequence=event.sequence, error_code=ErrorCode.ERROR_CODE_BUFFER_FULL
                )
        return answer


def test_the_sender_keeps_order_on_buffer_full_and_fails_a_refused_event_at_once() -> None:
    ledger = EventLedger(None)
    settings = ClientSettings.from_env({"KAFKA_SIDECAR_MODE": "sidecar"})
    failover = FallbackController(settings, ledger, DirectFallback({}, "c"), lambda: True)
    sender = Sender(ledger, settings, "c", failover, threading.Lock(), set())
    sender.transport = PartlyFull()
    for sequence, topic in ((1, "t"), (2, "bad"), (3, "t"), (4, "t")):
        event = Event(topic, b"v", None, -1, 0, None, None, 1)
        event.sequence = sequence
        ledger.unsent.append(event)
    sender.step()
    assert [e.sequence for e in ledger.unsent] == [3, 4]
    assert [(e.sequence, e.accepted_by) for e in ledger.inflight.values()] == [(1, "s1")]
    assert [(c[0].sequence, c[1].code()) for c in ledger.completions if c[1]] == [
        (2, KafkaError.TOPIC_EXCEPTION)
    ]


class Recording(ScriptedSidecar):
    """Accepts every event and remembers the size of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def emit(self, request: ProduceBatch) -> ProduceBatchAck:
        self.calls.append(len(request.events))
        answer = ProduceBatchAck(sidecar_id="s1")
        for event in request.events:
            answer.acks.add(received=True, sequence=event.sequence)
        return answer


def lingering_sender(linger_ms: str) -> tuple[Sender, EventLedger, Recording]:
    ledger = EventLedger(None)
    ledger.live_sidecar = "s1"  # its report stream is open
    settings = ClientSettings.from_env(
        {"KAFKA_SIDECAR_MODE": "sidecar", "KAFKA_SIDECAR_LINGER_MS": linger_ms}
    )
    failover = FallbackController(settings, ledger, DirectFallback({}, "c"), lambda: True)
    sender = Sender(ledger, settings, "c", failover, threading.Lock(), set())
    recording = Recording()
    sender.transport = recording
    return sender, ledger, recording


def queue_events(ledger: EventLedger, *sequences: int) -> None:
    with ledger.lock:
        for sequence in sequences:
            event = Event("t", b"v", None, -1, 0, None, None, 1)
            event.sequence = sequence
            ledger.unsent.append(event)


def test_an_idle_apps_event_is_sent_at_once_despite_the_linger() -> None:
    sender, ledger, recording = lingering_sender("2000")
    queue_events(ledger, 1)
    began = time.monotonic()
    sender.step()
    assert recording.calls == [1]
    assert time.monotonic() - began < 1.0


def test_a_busy_app_lingers_so_events_share_one_call() -> None:
    sender, ledger, recording = lingering_sender("300")
    queue_events(ledger, 1)
    sender.step()  # idle: at once; the next call is within the linger
    queue_events(ledger, 2)
    stepping = threading.Thread(target=sender.step)
    stepping.start()
    time.sleep(0.05)
    queue_events(ledger, 3, 4)
    stepping.join(5)
    assert recording.calls == [1, 3]


def test_probe_jitter_leaves_the_apps_global_random_sequence_alone() -> None:
    failover = controller()
    random.seed(7)
    expected = random.random()
    random.seed(7)
    delays = {failover.probe_delay() for _ in range(5)}
    assert random.random() == expected
    assert len(delays) > 1, "the probe interval is still jittered"


def test_a_sidecar_killed_before_its_report_stream_opened_keeps_per_key_order(
    sidecar: ScriptedSidecar,
) -> None:
    """Sidecar a accepts an event, then dies before the report thread reaches it; b starts. The
    event is re-sent when b's stream opens, and no newer event may reach b before it."""
    stream_open = threading.Event()

    def stream_waits() -> None:
        if not stream_open.is_set():
            raise SidecarUnreachable("UNAVAILABLE: not started yet")

    sent: list[list[int]] = []
    sidecar.emit_hook = lambda request: sent.append([e.sequence for e in request.events])
    sidecar.report, sidecar.subscribe_hook, sidecar.sidecar_id = False, stream_waits, "a"
    mode = make_mode(sidecar)
    mode.produce("t", b"1", b"k")
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    sidecar.sidecar_id = "b"  # a was killed, its events unreported; b now answers
    mode.produce("t", b"2", b"k")
    time.sleep(0.3)
    assert sent == [[1]], "nothing newer is sent while a's events are unconfirmed"
    sidecar.report = True
    stream_open.set()  # b's stream: a's event is re-sent, then the newer one
    assert mode.flush(5) == 0
    assert [sequence for call in sent for sequence in call] == [1, 1, 2]
    assert mode.counter_totals()["t"]["resent"] == 1
    mode.close()


def test_after_the_drain_timeout_events_of_a_sidecar_without_a_stream_go_direct_first() -> None:
    """In fallback, new events stop waiting for a sidecar's events at the drain timeout; those
    of a sidecar whose stream never opened go direct before them, in order."""
    failover = controller()
    ledger = failover.ledger
    owed, new = queued_event(1), queued_event(2)
    owed.accepted_by = "dead"
    ledger.inflight[1] = owed
    ledger.unsent.append(new)
    failover.active, failover.since = True, time.monotonic() - 3600
    sent: list[int] = []
    failover.direct.send = lambda event, _: sent.append(event.sequence)  # type: ignore[method-assign,assignment]
    failover.next_probe = time.monotonic() + 3600
    failover.step()
    assert sent == [1, 2]
    assert owed.resent


def queued_event(sequence: int) -> Event:
    event = Event("t", b"v", b"k", -1, 0, None, None, 1)
    event.sequence = sequence
    return event
