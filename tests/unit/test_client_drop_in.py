"""Differential tests: ``confluent_kafka.Producer`` and ours, side by side with the same calls.

Each behaviour runs against confluent's producer and ours in direct and in sidecar mode (over a
scripted sidecar, so no broker is needed) and compares results and exception types. What
differs on purpose is listed in docs/client.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as ConfluentProducer

from kafka_sidecar_client import Producer, sidecar_mode
from tests.unit.scripted_sidecar import NOWHERE, ScriptedSidecar

pytestmark = pytest.mark.unit

Make = Callable[..., Any]
# No brokers: librdkafka then queues no connection-error events, which len() would count.
CONF = {"bootstrap.servers": ""}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedSidecar]:
    sidecar = ScriptedSidecar()
    monkeypatch.setattr(sidecar_mode, "open_transport", lambda *_: sidecar)
    yield sidecar
    sidecar.closed.set()


@pytest.fixture(params=["direct", "sidecar"])
def ours(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, scripted: ScriptedSidecar
) -> Make:
    """Our Producer class, in the mode of the test's parameter."""
    monkeypatch.setenv("KAFKA_SIDECAR_MODE", request.param)
    monkeypatch.setenv("KAFKA_SIDECAR_FALLBACK", "none")
    monkeypatch.setenv("KAFKA_SIDECAR_PROBE_INTERVAL_MS", "60000")
    scripted.unreachable = True  # events stay queued, as with confluent's unreachable broker
    return Producer


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("returns", call())
    except Exception as error:  # the type is what is compared
        return ("raises", type(error))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((None,), {}),
        (([],), {}),
        (({}, {}), {}),
        ((), {"bootstrap.servers": NOWHERE}),
        (({"bootstrap.servers": NOWHERE},), {"linger.ms": 5}),
        (({"no.such.property": 1},), {}),
        (({"bootstrap.servers": NOWHERE, "acks": "sometimes"},), {}),
    ],
    ids=repr,
)
def test_construction_fails_and_succeeds_alike(
    ours: Make, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    # Spelled out: confluent's C constructor tells Producer() from Producer(**{}).
    theirs = outcome(
        lambda: ConfluentProducer(*args, **kwargs) if args or kwargs else ConfluentProducer()
    )
    mine = outcome(lambda: ours(*args, **kwargs) if args or kwargs else ours())
    assert mine[0] == theirs[0]
    if theirs[0] == "raises":
        assert mine[1] is theirs[1]


def test_an_empty_producer_has_length_zero_and_is_true(ours: Make) -> None:
    for producer in (ConfluentProducer(CONF), ours(CONF)):
        assert len(producer) == 0
        assert bool(producer) is True


def test_the_context_manager_yields_the_producer_and_closes_it(ours: Make) -> None:
    for make in (ConfluentProducer, ours):
        with make(CONF) as producer:
            assert isinstance(producer, make)
        assert outcome(partial(producer.produce, "t", b"x")) == ("raises", RuntimeError)


def test_close_returns_true_and_produce_afterwards_raises_runtime_error(ours: Make) -> None:
    for producer in (ConfluentProducer(CONF), ours(CONF)):
        assert producer.close() is True
        assert outcome(partial(producer.produce, "t", b"x")) == ("raises", RuntimeError)


@pytest.mark.parametrize(
    ("in_queue", "in_flight", "codes"),
    [
        (True, True, {KafkaError._PURGE_QUEUE}),
        (True, False, {KafkaError._PURGE_QUEUE}),
        (False, True, set()),
    ],
)
def test_purge_resolves_queued_events_with_the_same_codes(
    ours: Make, in_queue: bool, in_flight: bool, codes: set[int]
) -> None:
    results = []
    for producer in (ConfluentProducer(CONF), ours(CONF)):
        seen: list[int] = []

        def record(err: Any, _msg: Any, seen: list[int] = seen) -> None:
            seen.append(err.code())

        for n in range(3):
            producer.produce("t", b"%d" % n, on_delivery=record)
        time.sleep(0.3)  # sidecar mode: the sender has tried and given up
        producer.purge(in_queue=in_queue, in_flight=in_flight)
        producer.poll(0.2)
        results.append((set(seen), len(producer)))
        producer.purge()
        producer.poll(0)
    assert results[0] == results[1]
    assert results[0][0] == codes


def test_a_callback_that_raises_propagates_out_of_poll_and_flush(ours: Make) -> None:
    def boom(err: Any, msg: Any) -> None:
        raise ValueError("callback failed")

    for producer in (ConfluentProducer(CONF), ours(CONF)):
        producer.produce("t", b"x", on_delivery=boom)
        time.sleep(0.3)
        producer.purge()
        assert outcome(partial(producer.poll, 1)) == ("raises", ValueError)
        producer.produce("t", b"y", on_delivery=boom)
        time.sleep(0.3)
        producer.purge()
        assert outcome(partial(producer.flush, 1)) == ("raises", ValueError)


def test_a_subclass_override_is_not_shadowed_and_super_reaches_the_producer(
    ours: Make,
) -> None:
    calls: list[str] = []

    def subclass(base: type) -> type:
        class Counting(base):  # type: ignore[misc]
            def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
                calls.append(topic)
                super().produce(topic, *args, **kwargs)

        return Counting

    for base in (ConfluentProducer, ours):
        producer = subclass(base)(CONF)
        producer.produce("t", b"x")
        assert len(producer) == 1
        producer.purge()
        producer.poll(0)
    assert calls == ["t", "t"]


@pytest.mark.parametrize(
    "messages",
    [
        [{"value": b"1"}, {"value": b"2", "key": b"k"}],
        [{"value": b"1"}, {"value": 3}],
        [{"value": b"1", "key": 1}],
        [1],
        [{"value": b"1", "partition": "x"}],
        [{"value": b"1", "timestamp": 5}],
        "not a list",
        [],
    ],
    ids=repr,
)
def test_produce_batch_validates_like_confluent(ours: Make, messages: Any) -> None:
    theirs = outcome(lambda: ConfluentProducer(CONF).produce_batch("t", list(messages)))
    mine = outcome(lambda: ours(CONF).produce_batch("t", list(messages)))
    if isinstance(messages, str):
        theirs = outcome(lambda: ConfluentProducer(CONF).produce_batch("t", messages))
        mine = outcome(lambda: ours(CONF).produce_batch("t", messages))
    assert mine[0] == theirs[0]
    if theirs[0] == "raises":
        assert mine[1] is theirs[1]
    else:
        assert mine == theirs


def test_produce_batch_marks_what_did_not_fit_with_queue_full(ours: Make) -> None:
    batches = []
    for make in (ConfluentProducer, ours):
        producer = make({**CONF, "queue.buffering.max.messages": 2})
        messages: list[dict[str, Any]] = [{"value": b"1"}, {"value": b"2"}, {"value": b"3"}]
        queued = producer.produce_batch("t", messages)
        batches.append((queued, [m.get("_error") and m["_error"].code() for m in messages]))
        producer.purge()
        producer.poll(0)
    assert batches[0] == batches[1] == (2, [None, None, KafkaError._QUEUE_FULL])


def test_non_producing_methods_exist_on_both(ours: Make) -> None:
    public = {name for name in dir(ConfluentProducer) if not name.startswith("_")}
    producer = ours(CONF)
    assert all(callable(getattr(producer, name)) for name in public)


def test_produce_of_an_oversized_event_raises_kafka_exception_alike(ours: Make) -> None:
    conf = {**CONF, "message.max.bytes": 1000}
    for producer in (ConfluentProducer(conf), ours(conf)):
        assert outcome(partial(producer.produce, "t", os.urandom(5000))) == (
            "raises",
            KafkaException,
        )


@pytest.mark.parametrize("mode", ["direct", "sidecar"])
def test_a_forked_child_delegates_to_a_producer_made_in_the_child(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("KAFKA_SIDECAR_MODE", mode)
    producer = Producer(CONF)
    in_parent = producer.list_topics.__self__  # the direct producer behind list_topics
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        try:
            os.write(writing, b"1" if producer.list_topics.__self__ is not in_parent else b"0")
        finally:
            os._exit(0)
    os.close(writing)
    try:
        answer = os.read(reading, 1)
    finally:
        os.close(reading)
        os.waitpid(pid, 0)
    assert answer == b"1"
    assert producer.list_topics.__self__ is in_parent  # the parent keeps its own
