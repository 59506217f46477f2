"""The sidecar's configuration: one frozen dataclass read from the environment, validated up front.

Nothing else in the sidecar reads ``os.environ``; a bad value stops the process at start with a
message naming the variable and the values it accepts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kafka_sidecar_api.contract import (
    DEFAULT_METRICS_ADDR,
    PRODUCER_ENV_PREFIX,
    SOCKET_ADDRESS,
    number,
    positive_int,
    producer_property,
)

PRODUCER_PREFIX = PRODUCER_ENV_PREFIX
DEFAULT_LISTEN = SOCKET_ADDRESS
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL

# What the sidecar's single producer runs with unless KAFKA_PRODUCER_* says otherwise: no loss and
# no reordering on retries (idempotence, acks=all), cheap bandwidth, and a short linger so the
# events of all the pod's processes share batches.
PRODUCER_DEFAULTS: dict[str, str] = {
    "enable.idempotence": "true",
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": "5",
    "statistics.interval.ms": "5000",
}

# How the memory limit is shared (KAFKA_SIDECAR_MEMORY_LIMIT_BYTES). The interpreter, gRPC and
# librdkafka's threads and buffers take a fixed part; librdkafka keeps about as much again as its
# queued payload in message headers, batches being built and compression buffers; reports wait
# in Python while clients read them. Measured in tests/integration/test_memory_bound.py.
MEMORY_RESERVED_BYTES = 96 * 1024 * 1024
QUEUE_SHARE_OF_REST = 0.25
MIN_QUEUE_BYTES = 4 * 1024 * 1024
BYTES_PER_QUEUED_MESSAGE = 1024  # bounds the message count so per-message overhead fits too

LogFormat = Literal["text", "json"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A configuration value users must fix; the message names the variable."""


@dataclass(frozen=True)
class SidecarConfig:
    """Everything ``kafka-sidecar serve`` is configured with."""

    producer: dict[str, str]
    """librdkafka settings: PRODUCER_DEFAULTS overlaid with ``KAFKA_PRODUCER_<NAME>`` variables,
    the name upper-cased with dots as underscores (``KAFKA_PRODUCER_BOOTSTRAP_SERVERS``)."""

    listen: str = DEFAULT_LISTEN
    """``KAFKA_SIDECAR_LISTEN``: the gRPC address, ``unix:///path`` (the pod's shared emptyDir)."""

    listen_tcp: str | None = None
    """``KAFKA_SIDECAR_LISTEN_TCP``: an extra loopback ``host:port`` for clients that cannot use a
    Unix socket. Only loopback addresses are accepted: the sidecar has no authentication."""

    metrics_addr: str | None = DEFAULT_METRICS_ADDR
    """``KAFKA_SIDECAR_METRICS_ADDR``: ``host:port`` of /metrics, /healthz, /readyz; empty = off."""

    allowed_topics: tuple[str, ...] | None = None
    """``KAFKA_SIDECAR_ALLOWED_TOPICS``: comma-separated topic names or ``prefix*`` patterns the
    pod may write to; unset = any topic."""

    shutdown_grace_seconds: float = 25.0
    """``KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS``: on SIGTERM, how long to flush and deliver reports
    before exiting. Keep it below the pod's terminationGracePeriodSeconds (default 30)."""

    report_buffer_size: int = 200_000
    """``KAFKA_SIDECAR_REPORT_BUFFER_SIZE``: events of one client the sidecar holds at once
    (accepted and not yet reported to it, unread reports included). Beyond it that client gets
    BUFFER_FULL until it reads its reports: reports are never dropped for a live client."""

    client_max_bytes: int = 0
    """``KAFKA_SIDECAR_CLIENT_MAX_BYTES``: key + value bytes of one client in the producer at
    once; beyond it that client gets BUFFER_FULL, so one client cannot fill the whole queue.
    Default: half of the producer's queue.buffering.max.kbytes."""

    memory_limit_bytes: int | None = None
    """``KAFKA_SIDECAR_MEMORY_LIMIT_BYTES``: the container's memory limit (the webhook passes
    it). When set, librdkafka's queue.buffering.max.kbytes and .max.messages are derived from
    it unless KAFKA_PRODUCER_* sets them, so a broker outage answers BUFFER_FULL instead of
    growing the sidecar until it is OOM-killed."""

    retry_after_ms: int = 50
    """``KAFKA_SIDECAR_RETRY_AFTER_MS``: the wait suggested to clients when the buffer is full."""

    max_clients: int = 1024
    """``KAFKA_SIDECAR_MAX_CLIENTS``: client processes tracked at once; the longest idle is
    forgotten first."""

    log_level: str = "INFO"
    """``KAFKA_SIDECAR_LOG_LEVEL``: one of DEBUG, INFO, WARNING, ERROR."""

    log_format: LogFormat = "text"
    """``KAFKA_SIDECAR_LOG_FORMAT``: ``text`` or ``json``."""

    @property
    def message_max_bytes(self) -> int:
        """The producer's limit for one record (librdkafka's default is 1,000,000)."""
        return int(self.producer.get("message.max.bytes", "1000000"))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SidecarConfig:
        producer = dict(PRODUCER_DEFAULTS)
        for name, value in env.items():
            prop = producer_property(name)
            if prop is not None:
                producer[prop] = value
        if not producer.get("bootstrap.servers"):
            raise ConfigError(
                "KAFKA_PRODUCER_BOOTSTRAP_SERVERS is required: the brokers to produce to, "
                "e.g. kafka-0.kafka:9092,kafka-1.kafka:9092"
            )
        if "message.max.bytes" in producer:
            _positive_int(producer["message.max.bytes"], "KAFKA_PRODUCER_MESSAGE_MAX_BYTES")
        memory_raw = env.get("KAFKA_SIDECAR_MEMORY_LIMIT_BYTES", "").strip()
        memory_limit = (
            _positive_int(memory_raw, "KAFKA_SIDECAR_MEMORY_LIMIT_BYTES") if memory_raw else None
        )
        if memory_limit is not None:
            producer = {**queue_limits(memory_limit), **producer}
        queue_kbytes = _positive_int(
            producer.get("queue.buffering.max.kbytes", "1048576"),
            "KAFKA_PRODUCER_QUEUE_BUFFERING_MAX_KBYTES",
        )

        listen = env.get("KAFKA_SIDECAR_LISTEN", DEFAULT_LISTEN)
        if not listen.startswith("unix:"):
            raise ConfigError(
                f"KAFKA_SIDECAR_LISTEN must be a unix:///path address, got {listen!r} "
                "(use KAFKA_SIDECAR_LISTEN_TCP for a loopback TCP port)"
            )
        if len(socket_path(listen).encode()) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"KAFKA_SIDECAR_LISTEN path is {len(socket_path(listen).encode())} bytes; a Unix "
                f"socket path may have at most {MAX_SOCKET_PATH}: {listen!r}"
            )
        listen_tcp = env.get("KAFKA_SIDECAR_LISTEN_TCP") or None
        if listen_tcp is not None:
            _loopback_address(listen_tcp, "KAFKA_SIDECAR_LISTEN_TCP")
        metrics_addr = env.get("KAFKA_SIDECAR_METRICS_ADDR", DEFAULT_METRICS_ADDR) or None
        if metrics_addr is not None:
            _split_address(metrics_addr, "KAFKA_SIDECAR_METRICS_ADDR")

        allowed_raw = env.get("KAFKA_SIDECAR_ALLOWED_TOPICS", "").strip()
        allowed = tuple(t.strip() for t in allowed_raw.split(",") if t.strip()) or None

        log_level = env.get("KAFKA_SIDECAR_LOG_LEVEL", "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"KAFKA_SIDECAR_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
            )
        log_format = env.get("KAFKA_SIDECAR_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise ConfigError(f"KAFKA_SIDECAR_LOG_FORMAT must be text or json, got {log_format!r}")

        return cls(
            producer=producer,
            listen=listen,
            listen_tcp=listen_tcp,
            metrics_addr=metrics_addr,
            allowed_topics=allowed,
            shutdown_grace_seconds=_positive_float(
                env.get("KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS", "25"),
                "KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS",
            ),
            report_buffer_size=_positive_int(
                env.get("KAFKA_SIDECAR_REPORT_BUFFER_SIZE", "200000"),
                "KAFKA_SIDECAR_REPORT_BUFFER_SIZE",
            ),
            retry_after_ms=_positive_int(
                env.get("KAFKA_SIDECAR_RETRY_AFTER_MS", "50"), "KAFKA_SIDECAR_RETRY_AFTER_MS"
            ),
            max_clients=_positive_int(
                env.get("KAFKA_SIDECAR_MAX_CLIENTS", "1024"), "KAFKA_SIDECAR_MAX_CLIENTS"
            ),
            client_max_bytes=_positive_int(
                env.get("KAFKA_SIDECAR_CLIENT_MAX_BYTES", "") or str(queue_kbytes * 512),
                "KAFKA_SIDECAR_CLIENT_MAX_BYTES",
            ),
            memory_limit_bytes=memory_limit,
            log_level=log_level,
            log_format="json" if log_format == "json" else "text",
        )


def queue_limits(memory_limit: int) -> dict[str, str]:
    """librdkafka's queue bounds for a container limited to ``memory_limit`` bytes."""
    queue_bytes = max(
        MIN_QUEUE_BYTES, int((memory_limit - MEMORY_RESERVED_BYTES) * QUEUE_SHARE_OF_REST)
    )
    return {
        "queue.buffering.max.kbytes": str(queue_bytes // 1024),
        "queue.buffering.max.messages": str(
            min(100_000, max(1000, queue_bytes // BYTES_PER_QUEUED_MESSAGE))
        ),
    }


def _positive_int(raw: str, name: str) -> int:
    return positive_int(raw, name, ConfigError)


def _positive_float(raw: str, name: str) -> float:
    return number(raw, name, "seconds", ConfigError)


def _split_address(raw: str, name: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port with a port 0-65535, got {raw!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - metrics are scraped by pod IP


def _loopback_address(raw: str, name: str) -> None:
    host, _ = _split_address(raw, name)
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"{name} must be a loopback address (127.0.0.0/8, ::1, localhost), "
            f"got {raw!r}: the sidecar has no authentication"
        )


def socket_path(listen: str) -> str:
    """The filesystem path of a ``unix:`` gRPC address."""
    return listen.removeprefix("unix://").removeprefix("unix:")


def split_address(raw: str) -> tuple[str, int]:
    """``host:port`` of an address that ``from_env`` already validated."""
    return _split_address(raw, "address")
