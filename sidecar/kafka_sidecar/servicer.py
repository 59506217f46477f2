"""The gRPC servicer: translates requests to ``Engine`` calls and its answers to statuses.

Which calls are refused is decided in ``Engine.answer`` (the frames transport shares it); here
a refusal becomes its gRPC status: UNAVAILABLE while draining (clients fall back),
RESOURCE_EXHAUSTED with ``retry-after-ms`` when nothing fitted the buffer (clients wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from kafka_sidecar.engine import Engine, Refusal
from kafka_sidecar_api.v1 import sidecar_pb2_grpc
from kafka_sidecar_api.v1.sidecar_pb2 import (
    DeliveryReportBatch,
    ProduceAck,
    ProduceBatch,
    ProduceBatchAck,
    ProduceRequest,
    SubscribeRequest,
)


class ProducerSidecarServicer(sidecar_pb2_grpc.ProducerSidecarServicer):
    """``kafka_sidecar.v1.ProducerSidecar`` over an ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        try:
            yield DeliveryReportBatch(sidecar_id=engine.sidecar_id)
            while (messages := engine.next_messages(client, token)) is not None:
                for message in messages:
                    yield message
                if messages:
                    continue
                wake.clear()
                if not client.reports:  # none arrived since the take: wait for the poll thread
                    await wake.wait()
        finally:
            engine.unsubscribe(client, token)
