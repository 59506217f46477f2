"""``serve()``: the sidecar's lifecycle — start, serve, and on SIGTERM drain without losing events.

It serves gRPC and, next to a Unix socket, the frames transport (``frames_server.py``). Shutdown
order: report NOT_SERVING and refuse new events with UNAVAILABLE (clients fall back), flush the
producer within the grace period, let every report stream deliver what it holds, then stop both
servers and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import grpc
from confluent_kafka import KafkaException, Producer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from kafka_sidecar import unix_socket
from kafka_sidecar.config import ConfigError, SidecarConfig, split_address
from kafka_sidecar.endpoints import start_http
from kafka_sidecar.engine import Engine
from kafka_sidecar.frames_server import FramesServer
from kafka_sidecar.metrics import SidecarMetrics
from kafka_sidecar.servicer import ProducerSidecarServicer
from kafka_sidecar_api.contract import HEALTH_SERVICE, producer_env_name
from kafka_sidecar_api.frames import frames_path
from kafka_sidecar_api.v1 import sidecar_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = HEALTH_SERVICE
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def make_producer(config: SidecarConfig, metrics: SidecarMetrics) -> Producer:
    """The pod's one producer; an unknown librdkafka property names its env variable."""
    settings: dict[str, object] = dict(config.producer)
    settings["stats_cb"] = metrics.apply_statistics
    settings["error_cb"] = _log_kafka_error
    try:
        return Producer(settings)
    except KafkaException as error:
        message = error.args[0].str() if error.args else str(error)
        raise ConfigError(_name_variable(message)) from None


def _name_variable(message: str) -> str:
    # librdkafka says: No such configuration property: "foo.bar"
    if '"' in message:
        prop = message.split('"')[1]
        return f"{message} (set by {producer_env_name(prop)})"
    return message


def _log_kafka_error(error: object) -> None:
    log.warning("Kafka client error: %s", error)


class Sidecar:
    """A running sidecar; ``run()`` returns when it has shut down."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.metrics = SidecarMetrics()
        self.producer = make_producer(config, self.metrics)
        self.stop_requested = asyncio.Event()
        self.ready = threading.Event()
        self.serving = False
        self._stop_threads = threading.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        engine = Engine(self.producer, self.config, self.metrics)
        servicer = ProducerSidecarServicer(engine)
        health = health_aio.HealthServicer()
        server = grpc.aio.server(options=GRPC_OPTIONS)
        sidecar_pb2_grpc.add_ProducerSidecarServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        socket_path = unix_socket.prepare(self.config.listen)
        try:
            server.add_insecure_port(self.config.listen)
        except RuntimeError as error:  # gRPC's "Failed to bind": the checks above missed a cause
            raise unix_socket.unusable(self.config.listen, socket_path.parent, str(error)) from None
        if self.config.listen_tcp:
            server.add_insecure_port(self.config.listen_tcp)
        await server.start()
        unix_socket.open_to_all_uids(self.config.listen)
        frames_at = frames_path(self.config.listen)
        frames_server = None
        if frames_at is not None:
            frames_server = FramesServer(engine, frames_at, lambda: self.serving)
            frames_server.start()

        poller = threading.Thread(
            target=engine.poll_forever,
            args=(self._stop_threads,),
            name="producer-poll",
            daemon=True,
        )
        poller.start()
        threading.Thread(target=self._await_metadata, name="metadata", daemon=True).start()
        http = None
        if self.config.metrics_addr:
            host, port = split_address(self.config.metrics_addr)
            http = start_http(
                host, port, self.metrics.registry, lambda: self.serving, self.ready.is_set
            )
        for name in ("", SERVICE_NAME):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop_requested.set)
        log.info(
            "Serving on %s%s%s, metrics on %s",
            self.config.listen,
            f" (frames on {frames_at})" if frames_at else "",
            f" and {self.config.listen_tcp}" if self.config.listen_tcp else "",
            self.config.metrics_addr or "(off)",
        )

        await self.stop_requested.wait()
        started = time.monotonic()
        deadline = started + self.config.shutdown_grace_seconds
        log.info("Draining: %d event(s) in the producer", len(self.producer))
        engine.draining = True
        for name in ("", SERVICE_NAME):
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        while not engine.idle() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = len(self.producer)
        if left:
            log.error(
                "Shut down with %d event(s) not acknowledged by Kafka after %.1fs; their "
                "clients resend them through their fallback",
                left,
                self.config.shutdown_grace_seconds,
            )
        engine.close_streams()
        await server.stop(max(0.5, deadline - time.monotonic()))
        if frames_server is not None:
            frames_server.stop(max(0.5, deadline - time.monotonic()))
        self._stop_threads.set()
        poller.join(timeout=5)
        if http is not None:
            http.shutdown()
        socket_path.unlink(missing_ok=True)
        log.info("Shut down after draining for %.1fs", time.monotonic() - started)
        return 0

    def _await_metadata(self) -> None:
        """Ready once the brokers answered metadata; retried until then."""
        while not self._stop_threads.is_set():
            try:
                self.producer.list_topics(timeout=5)
            except KafkaException as error:
                log.warning("Broker metadata not available yet: %s", error)
                continue
            self.ready.set()
            self.metrics.ready.set(1)
            log.info("Broker metadata obtained; ready")
            return
