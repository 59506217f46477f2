"""A transport whose sidecar is a script: unit tests of the client's threads without gRPC."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReport,
    DeliveryReportBatch,
    ProduceBatch,
    ProduceBatchAck,
)
from kafka_sidecar_client.transport import SidecarUnreachable

NOWHERE = "127.0.0.1:1"  # nothing listens: no unit test reaches a broker


class ScriptedSidecar:
    """A transport whose sidecar accepts everything and reports when told to."""

    needs_quiesce = True

    def __init__(self) -> None:
        self.emit_hook: Callable[[ProduceBatch], None] | None = None
        self.report = True
        self.reports: queue.Queue[DeliveryReportBatch | None] = queue.Queue()
        self.closed = threading.Event()
        self.subscribe_hook: Callable[[], None] | None = None
        self.unreachable = False
        self.sidecar_id = "s1"  # a restarted sidecar answers with a new one

    def __call__(self, address: str, timeout: float) -> ScriptedSidecar:
        return self  # the factory SidecarMode calls

    def emit(self, request: ProduceBatch) -> ProduceBatchAck:
        if self.unreachable:
            raise SidecarUnreachable("UNAVAILABLE: scripted")
        if self.emit_hook is not None:
            self.emit_hook(request)
        answer = ProduceBatchAck(sidecar_id=self.sidecar_id)
        for event in request.events:
            answer.acks.add(received=True, sequence=event.sequence)
        if self.report:
            self.reports.put(
                DeliveryReportBatch(
                    sidecar_id=self.sidecar_id,
                    reports=[
                        DeliveryReport(sequence=e.sequence, topic=e.topic, offset=e.sequence)
                        for e in request.events
                    ],
                )
            )
        return answer

    def subscribe(self, client_id: str) -> Iterator[DeliveryReportBatch]:
        if self.subscribe_hook is not None:
            self.subscribe_hook()
        yield DeliveryReportBatch(sidecar_id=self.sidecar_id)
        while not self.closed.is_set():
            try:
                batch = self.reports.get(timeout=0.05)
            except queue.Empty:
                continue
            if batch is not None:
                yield batch

    def cancel_stream(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def release_in_child(self) -> None:
        pass

    def close(self) -> None:
        self.closed.set()
