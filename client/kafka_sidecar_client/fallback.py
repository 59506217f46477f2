"""The direct path used while the sidecar is unreachable: a confluent producer made on demand.

It carries the same config as the app's, so the partitioner is the same and a key lands on the
same partition as through the sidecar; each event keeps the id header the sidecar would set.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as KafkaProducer

from kafka_sidecar_client.events import Event

OnDirectDelivery = Callable[[Event, KafkaError | None, Message | None], None]


class DirectFallback:
    """Lazily created direct producer; only a process that needs it opens broker connections."""

    def __init__(self, config: Mapping[str, Any], client_id: str) -> None:
        self.config = dict(config)
        self.client_id = client_id
        self._producer: KafkaProducer | None = None

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(self.config)
        return self._producer

    @property
    def created(self) -> bool:
        return self._producer is not None

    def send(self, event: Event, on_delivery: OnDirectDelivery) -> None:
        """Produce one event directly; waits (serving callbacks) while the local queue is full.

        A synchronous error is the event's delivery report, as an app would see it from a
        direct producer's callback-less failure: it never escapes into the sender thread.
        """
        headers: list[tuple[str, str | bytes | None]] = list(event.headers or ())
        headers.append(event.id_header(self.client_id))
        callback = functools.partial(on_delivery, event)
        while True:
            try:
                self.producer.produce(
                    event.topic,
                    event.value,
                    event.key,
                    partition=event.partition,
                    timestamp=event.timestamp,
                    headers=headers,
                    on_delivery=callback,
                )
            except BufferError:
                self.producer.poll(0.05)
                continue
            except KafkaException as error:  # MSG_SIZE_TOO_LARGE, _UNKNOWN_PARTITION, ...
                on_delivery(event, error.args[0], None)
            except Exception as error:  # never the sender thread's end
                on_delivery(event, KafkaError(KafkaError._INVALID_ARG, str(error)), None)
            return

    def pending(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks, or just wait when there is no producer yet."""
        if self._producer is not None:
            self._producer.poll(timeout)
        elif timeout > 0:
            time.sleep(timeout)
