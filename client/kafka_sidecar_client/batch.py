"""``produce_batch()`` for sidecar mode: confluent's checks and per-message ``_error``, over
``produce()`` (the sidecar batches on its own, so a batch is only a loop here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from kafka_sidecar_client.events import DeliveryCallback, check_topic

Produce = Callable[..., None]


def produce_batch(
    produce: Produce,
    topic: str,
    messages: list[dict[str, Any]],
    partition: int = -1,
    on_delivery: DeliveryCallback | None = None,
) -> int:
    """Queue every message; returns how many were queued. A message that could not be queued
    gets an ``_error`` entry (a ``KafkaError``), as confluent-kafka does; malformed input raises
    the exception type confluent raises for it."""
    check_topic(topic)
    if not isinstance(messages, list):
        raise TypeError("messages must be a list")
    queued = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"Message at index {index} must be a dict")
        for field in ("value", "key"):
            if not isinstance(message.get(field), (bytes, str, type(None))):
                raise TypeError(f"Message {field} at index {index} must be bytes or str")
        if "timestamp" in message:
            raise NotImplementedError(
                "Message timestamps are not currently supported in batch mode"
            )
        target = message.get("partition", partition)
        if target is None:
            target = partition
        if not isinstance(target, int):
            raise TypeError(f"Message partition at index {index} must be int")
        try:
            produce(
                topic,
                message.get("value"),
                message.get("key"),
                partition=target,
                on_delivery=message.get("callback") or on_delivery,
            )
        except BufferError:
            message["_error"] = KafkaError(
                KafkaError._QUEUE_FULL, "Message failed: Local: Queue full"
            )
            continue
        except KafkaException as error:
            message["_error"] = error.args[0]
            continue
        queued += 1
    return queued
