"""Producer workers for multi-process tests: keyed sequence numbers a checker can verify.

Event ``n`` of worker ``w`` has key ``w-(n % KEYS)`` and value ``w:n``; per key the values must be
consumed strictly increasing, with no gaps.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Message

from kafka_sidecar_client import Producer

KEYS = 16


def produce_sequence(
    producer: Any,
    topic: str,
    worker: int,
    count: int,
    interrupt: tuple[int, Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Produce ``count`` events; returns what the delivery callbacks said about each.

    ``interrupt=(n, fn)`` calls ``fn`` once before event ``n`` (a sidecar killed mid-run).
    """
    reports: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
            return
        seq = int(msg.value().split(b":")[1])
        reports[seq] = (msg.partition(), msg.offset())

    for n in range(count):
        if interrupt is not None and n == interrupt[0]:
            interrupt[1]()
        while True:
            try:
                producer.produce(
                    topic,
                    value=f"{worker}:{n}".encode(),
                    key=f"{worker}-{n % KEYS}".encode(),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.01)
        if n % 500 == 0:
            producer.poll(0)
    left = producer.flush(120)
    return {
        "worker": worker,
        "left": left,
        "errors": errors[:5],
        "error_count": len(errors),
        "reports": reports,
        "counters": producer.emission_counters() if hasattr(producer, "emission_counters") else {},
    }


# The producer a forked child inherits from its parent (fork start method only).
INHERITED: dict[str, Any] = {}


def forked_worker(topic: str, worker: int, count: int, results: Any) -> None:
    results.put(
        json.dumps(produce_sequence(INHERITED["producer"], topic, worker, count), default=str)
    )


def spawned_worker(bootstrap: str, topic: str, worker: int, count: int, results: Any) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    results.put(json.dumps(produce_sequence(producer, topic, worker, count), default=str))


def run_workers(
    method: str, target: Any, args: Iterable[tuple[Any, ...]], timeout: float = 300
) -> list[dict[str, Any]]:
    """Start one process per args tuple with the given start method; collect their results."""
    context: Any = multiprocessing.get_context(method)
    results = context.Queue()
    processes = [context.Process(target=target, args=(*a, results)) for a in args]
    for process in processes:
        process.start()
    collected = [json.loads(results.get(timeout=timeout)) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0, f"worker exited with {process.exitcode}"
    return collected


def check_order(messages: Iterable[Message], workers: int, count: int) -> dict[str, int]:
    """Per key, first occurrences strictly increasing with no gaps; returns duplicate counts."""
    last: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    duplicates = 0
    for message in messages:
        worker, n = (int(x) for x in (message.value() or b"").split(b":"))
        if (worker, n) in seen:
            duplicates += 1
            continue
        seen.add((worker, n))
        key = (message.key() or b"").decode()
        expected = last.get(key, n - KEYS) + KEYS
        assert n == expected, f"key {key}: got {n} after {last.get(key)} (expected {expected})"
        last[key] = n
    missing = workers * count - len(seen)
    assert missing == 0, f"{missing} event(s) never reached Kafka"
    return {"unique": len(seen), "duplicates": duplicates}


def offsets_by_value(messages: Iterable[Message]) -> dict[tuple[int, int], tuple[int, int]]:
    found: dict[tuple[int, int], tuple[int, int]] = {}
    for message in messages:
        worker, n = (int(x) for x in (message.value() or b"").split(b":"))
        found.setdefault((worker, n), (message.partition() or 0, message.offset() or 0))
    return found


def id_headers(messages: Iterable[Message]) -> dict[bytes, int]:
    counts: dict[bytes, int] = defaultdict(int)
    for message in messages:
        headers: list[tuple[str, Any]] = list(message.headers() or [])
        for key, value in headers:
            if key == "kafka-sidecar-id" and isinstance(value, bytes):
                counts[value] += 1
    return counts
