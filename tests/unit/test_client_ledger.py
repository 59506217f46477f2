"""The event ledger: each event unsent, in flight or resolved, and resolved exactly once."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError

from kafka_sidecar_api.v1.sidecar_pb2 import DeliveryReport
from kafka_sidecar_client.events import Event
from kafka_sidecar_client.ledger import EventLedger

pytestmark = pytest.mark.unit


def queued(ledger: EventLedger, *sequences: int, started: float | None = None) -> list[Event]:
    events = []
    for sequence in sequences:
        event = Event("t", b"v", None, -1, 0, None, None, 1)
        event.sequence = sequence
        if started is not None:
            event.started = started
        ledger.unsent.append(event)
        ledger.outstanding += 1
        events.append(event)
    return events


def send(ledger: EventLedger, *events: Event) -> None:
    for event in events:
        ledger.unsent.remove(event)
        ledger.inflight[event.sequence] = event


def test_requeued_events_go_back_in_sequence_order_and_count_as_resent_once() -> None:
    ledger = EventLedger(None)
    one, _, three = queued(ledger, 1, 2, 3)
    send(ledger, one, three)
    with ledger.lock:
        ledger.requeue([three, one], resent=True)
        ledger.requeue([one], resent=True)  # no longer in flight: nothing happens
    assert [e.sequence for e in ledger.unsent] == [1, 2, 3]
    assert ledger.counters.as_dict()["t"]["resent"] == 2


def test_a_report_resolves_its_event_once_and_unknown_reports_are_ignored() -> None:
    ledger = EventLedger(None)
    (event,) = queued(ledger, 1)
    send(ledger, event)
    ledger.resolve([DeliveryReport(sequence=1, offset=7), DeliveryReport(sequence=99)])
    ledger.resolve([DeliveryReport(sequence=1, offset=8)])  # a late duplicate report
    assert [(c[0].sequence, c[1], c[3]) for c in ledger.completions] == [(1, None, 7)]
    assert ledger.inflight == {}


def test_events_past_the_message_timeout_expire_wherever_they_are() -> None:
    ledger = EventLedger(message_timeout=1.0)
    now = time.monotonic()
    _, old_sent = queued(ledger, 1, 2, started=now - 5)
    (fresh,) = queued(ledger, 3, started=now)
    send(ledger, old_sent)
    with ledger.lock:
        ledger.expire(now)
    assert {c[0].sequence: c[1].code() for c in ledger.completions if c[1]} == {
        1: KafkaError._MSG_TIMED_OUT,
        2: KafkaError._MSG_TIMED_OUT,
    }
    assert list(ledger.unsent) == [fresh]
    assert ledger.next_expiry == pytest.approx(now + 1.0)


def test_purge_gives_queued_and_sent_events_their_own_codes() -> None:
    ledger = EventLedger(None)
    _, sent = queued(ledger, 1, 2)
    send(ledger, sent)
    ledger.purge(in_queue=True, in_flight=True)
    codes = {c[0].sequence: c[1].code() for c in ledger.completions if c[1]}
    assert codes == {1: KafkaError._PURGE_QUEUE, 2: KafkaError._PURGE_INFLIGHT}


def test_failing_everything_resolves_every_unresolved_event_once() -> None:
    ledger = EventLedger(None)
    _, sent = queued(ledger, 1, 2)
    send(ledger, sent)
    with ledger.lock:
        ledger.fail_everything(KafkaError(KafkaError._FAIL))
        ledger.fail_everything(KafkaError(KafkaError._FAIL))
    assert sorted(c[0].sequence for c in ledger.completions) == [1, 2]
