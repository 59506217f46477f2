"""The gRPC servicer: translates requests to ``Engine`` calls and its answers to statuses.

Which calls are refused is decided in ``Engine.answer`` (the frames transport shares it); here
a refusal becomes its gRPC status: UNAVAILABLE while draining (clients fall back),
RESOURCE_EXHAUSTED with ``retry-after-ms`` when nothing fitted the buffer (clients wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc

from kafka_sidecar.engine import Engine, Refusal, Report, report_error
from kafka_sidecar_api.v1 import sidecar_pb2_grpc
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
    ProduceAck,
    ProduceBatch,
    ProduceBatchAck,
    ProduceRequest,
    SubscribeRequest,
)

MAX_REPORTS_PER_MESSAGE = 8192


class ProducerSidecarServicer(sidecar_pb2_grpc.ProducerSidecarServicer):
    """``kafka_sidecar.v1.ProducerSidecar`` over an ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.closing = False

    async def Emit(self, request: ProduceRequest, context: grpc.aio.ServicerContext) -> ProduceAck:
        answer = await self._emit(self.engine.answer("Emit", request.client_id, [request]), context)
        return answer.acks[0]

    async def EmitBatch(
        self, request: ProduceBatch, context: grpc.aio.ServicerContext
    ) -> ProduceBatchAck:
        answer = self.engine.answer(
            "EmitBatch", request.client_id, request.events, request.app, request.counters
        )
        return await self._emit(answer, context)

    async def _emit(
        self, answer: ProduceBatchAck | Refusal, context: grpc.aio.ServicerContext
    ) -> ProduceBatchAck:
        if isinstance(answer, Refusal):
            if answer.retry_after_ms:
                context.set_trailing_metadata((("retry-after-ms", str(answer.retry_after_ms)),))
            await context.abort(getattr(grpc.StatusCode, answer.status), answer.message)
        assert isinstance(answer, ProduceBatchAck)  # abort() raised otherwise
        return answer

    async def SubscribeReports(
        self, request: SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[DeliveryReportBatch]:
        if not request.client_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "client_id is required")
        engine = self.engine
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake_up() -> None:  # from the poll thread
            loop.call_soon_threadsafe(wake.set)

        client, token = engine.subscribe(request.client_id, wake_up)
        engine.metrics.requests.labels("SubscribeReports", "OK").inc()
        yield DeliveryReportBatch(sidecar_id=engine.sidecar_id)
        try:
            while True:
                reports, dropped = engine.take_reports(client)
                if reports or dropped:
                    for batch in report_messages(engine.sidecar_id, reports, dropped):
                        yield batch
                    continue
                if self.closing or client.subscription is not token:
                    return
                wake.clear()
                if client.reports:
                    continue
                await wake.wait()
        finally:
            engine.unsubscribe(client, token)

    def close_streams(self) -> None:
        """End every report stream once its queued reports are sent (shutdown)."""
        self.closing = True
        self.engine.wake_all()


def report_messages(
    sidecar_id: str, reports: list[Report], dropped: int
) -> Iterator[DeliveryReportBatch]:
    """One take of a client's reports as stream messages of bounded size; the first carries
    the count of dropped reports."""
    for start in range(0, max(len(reports), 1), MAX_REPORTS_PER_MESSAGE):
        batch = report_batch(reports[start : start + MAX_REPORTS_PER_MESSAGE])
        batch.sidecar_id = sidecar_id
        batch.dropped = dropped if start == 0 else 0
        yield batch


def report_batch(reports: list[Report]) -> DeliveryReportBatch:
    """One stream message from report tuples; built with ``add`` so protobuf works in C."""
    batch = DeliveryReportBatch()
    add = batch.reports.add
    for sequence, err, topic, partition, offset, timestamp, latency in reports:
        if err is None:
            add(
                sequence=sequence,
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=timestamp,
                latency_seconds=latency,
            )
        else:
            code, retriable = report_error(err)
            add(
                sequence=sequence,
                topic=topic,
                partition=partition,
                offset=-1,
                error_code=code,
                kafka_error_code=err.code(),
                error_message=err.str(),
                retriable=retriable,
                latency_seconds=latency,
            )
    return batch
