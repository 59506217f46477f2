"""Sample app: a pre-fork multi-process producer written against the drop-in client only.

N forked workers each produce keyed sequence numbers at a steady rate; nothing here knows about
the sidecar — the environment decides (KAFKA_SIDECAR_MODE). On SIGTERM each worker stops,
flushes and prints one JSON line: what it produced and what the delivery callbacks confirmed, how
often the queue pushed back and how many events the client re-sent, so a checker can prove per-key
order, that nothing was lost and that every duplicate was a re-send.

Configured by environment: APP_TOPIC, APP_WORKERS (4), APP_RATE (events/s per worker, 200),
APP_EVENT_BYTES (100), APP_KEYS (8 per worker), APP_QUEUE_MESSAGES (100000: the producer's queue),
APP_NAME (the pod name), and the brokers in KAFKA_BOOTSTRAP_SERVERS (what a direct producer would
use anyway).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

from kafka_sidecar_client import Producer


def settings(env: dict[str, str]) -> dict[str, Any]:
    def number(name: str, default: int) -> int:
        raw = env.get(name, str(default))
        if not raw.isdigit() or int(raw) <= 0:
            raise SystemExit(f"{name} must be a positive integer, got {raw!r}")
        return int(raw)

    if "KAFKA_BOOTSTRAP_SERVERS" not in env or "APP_TOPIC" not in env:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS and APP_TOPIC are required")
    return {
        "bootstrap": env["KAFKA_BOOTSTRAP_SERVERS"],
        "topic": env["APP_TOPIC"],
        "workers": number("APP_WORKERS", 4),
        "rate": number("APP_RATE", 200),
        "size": number("APP_EVENT_BYTES", 100),
        "keys": number("APP_KEYS", 8),
        # The producer's queue.buffering.max.messages (confluent's default): how much it holds
        # before produce() pushes back with BufferError.
        "queue": number("APP_QUEUE_MESSAGES", 100_000),
        "name": env.get("APP_NAME") or env.get("HOSTNAME") or "app",
    }


STOP = False


def _stop(*_: Any) -> None:
    global STOP  # noqa: PLW0603 - a signal handler's flag
    STOP = True


def worker(producer: Producer, config: dict[str, Any], index: int) -> None:
    """Produce until SIGTERM; then flush and report."""
    signal.signal(signal.SIGTERM, _stop)
    acked: dict[str, int] = {}
    failed = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1
            return
        record = json.loads(msg.value())
        acked[record["key"]] = max(acked.get(record["key"], -1), record["seq"])

    padding = "x" * max(0, config["size"] - 60)
    interval = 1.0 / config["rate"]
    next_at = time.monotonic()
    produced = buffer_waits = 0
    last: dict[str, int] = {}
    while not STOP:
        key = f"{config['name']}-{index}-{produced % config['keys']}"
        seq = last.get(key, -1) + 1
        last[key] = seq
        value = json.dumps({"key": key, "seq": seq, "pad": padding}).encode()
        while True:
            try:
                producer.produce(config["topic"], value, key.encode(), on_delivery=on_delivery)
                break
            except BufferError:  # backpressure: the queue (the sidecar's or our own) is full
                buffer_waits += 1
                producer.poll(0.05)
        produced += 1
        producer.poll(0)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    left = producer.flush(60)
    report = {
        "app": config["name"],
        "worker": index,
        "produced": produced,
        "acked": sum(v + 1 for v in acked.values()),
        "failed": failed,
        "unflushed": left,
        "last": last,
        "buffer_waits": buffer_waits,
        # Events sent again after a sidecar failed mid-call: the only source of duplicates.
        "resent": sum(t["resent"] for t in producer.emission_counters().values()),
        "mode": os.environ.get("KAFKA_SIDECAR_MODE", "direct"),
    }
    # One write() per line: the workers share stdout, and print() may split a line in two.
    os.write(sys.stdout.fileno(), (json.dumps(report) + "\n").encode())


def main() -> int:
    config = settings(dict(os.environ))
    # Created before forking, like a pre-fork server's app object: the client is fork-safe.
    producer = Producer(
        {
            "bootstrap.servers": config["bootstrap"],
            "linger.ms": 5,
            "queue.buffering.max.messages": config["queue"],
        }
    )
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=worker, args=(producer, config, n), daemon=False)
        for n in range(config["workers"])
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.pid is not None:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return 0 if all(child.exitcode == 0 for child in children) else 1


if __name__ == "__main__":
    sys.exit(main())
