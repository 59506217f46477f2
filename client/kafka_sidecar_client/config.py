"""The client's settings: the mode and sidecar knobs from ``KAFKA_SIDECAR_*`` environment variables.

The app's own confluent config dict stays the app's: it configures the direct producer (direct mode
and fallback); only a few of its keys (buffer and size limits) also shape sidecar mode.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kafka_sidecar_api.contract import SOCKET_ADDRESS, number, positive_int

Mode = Literal["direct", "sidecar"]
Fallback = Literal["direct", "none"]
TransportKind = Literal["auto", "grpc"]
DEFAULT_ADDRESS = SOCKET_ADDRESS


class ClientConfigError(ValueError):
    """A ``KAFKA_SIDECAR_*`` value that must be fixed; the message names the variable."""


@dataclass(frozen=True)
class ClientSettings:
    """How a ``Producer`` reaches Kafka; read once per ``Producer`` from the environment."""

    mode: Mode = "direct"
    """``KAFKA_SIDECAR_MODE``: ``direct`` (default; plain confluent-kafka) or ``sidecar``."""

    address: str = DEFAULT_ADDRESS
    """``KAFKA_SIDECAR_ADDRESS``: the sidecar's gRPC address (``unix:///path`` or ``host:port``)."""

    fallback: Fallback = "direct"
    """``KAFKA_SIDECAR_FALLBACK``: ``direct`` (default) re-sends through a direct producer while the
    sidecar is unreachable; ``none`` keeps events buffered until it returns."""

    transport: TransportKind = "auto"
    """``KAFKA_SIDECAR_TRANSPORT``: ``auto`` (default) uses the sidecar's frames socket
    (``<socket>.frames``: the same messages without gRPC, a fraction of its CPU per call) when the
    sidecar offers it and gRPC otherwise; ``grpc`` always uses gRPC. TCP addresses use gRPC."""

    app: str = ""
    """``KAFKA_SIDECAR_APP``: the app label of the counters reported to the sidecar
    (default: the host name, i.e. the pod name)."""

    batch_max_events: int = 1000
    """``KAFKA_SIDECAR_BATCH_MAX_EVENTS``: events per EmitBatch call at most."""

    batch_max_bytes: int = 1_048_576
    """``KAFKA_SIDECAR_BATCH_MAX_BYTES``: payload bytes per EmitBatch call at most."""

    linger_ms: float = 2.0
    """``KAFKA_SIDECAR_LINGER_MS``: while the app is busy (the last batch left less than this long
    ago), wait up to this long for more events before sending the next batch; an idle app's event
    goes at once. Each call costs far more than an event in it; 0 never waits."""

    rpc_timeout_ms: int = 2000
    """``KAFKA_SIDECAR_RPC_TIMEOUT_MS``: a call taking longer counts as the sidecar being down."""

    probe_interval_ms: int = 1000
    """``KAFKA_SIDECAR_PROBE_INTERVAL_MS``: how often a client in fallback checks whether the
    sidecar is back (with jitter, so a pod's processes do not probe in step)."""

    drain_timeout_ms: int = 30_000
    """``KAFKA_SIDECAR_DRAIN_TIMEOUT_MS``: after the sidecar refused new events, how long new
    events wait for the reports of those it had already accepted before going direct (keeping
    per-key order meanwhile). Accepted events are re-sent only once the sidecar is gone."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClientSettings:
        mode = env.get("KAFKA_SIDECAR_MODE", "direct").strip().lower() or "direct"
        if mode not in ("direct", "sidecar"):
            raise ClientConfigError(
                f"KAFKA_SIDECAR_MODE must be 'direct' or 'sidecar', got {mode!r}"
            )
        fallback = env.get("KAFKA_SIDECAR_FALLBACK", "direct").strip().lower() or "direct"
        if fallback not in ("direct", "none"):
            raise ClientConfigError(
                f"KAFKA_SIDECAR_FALLBACK must be 'direct' or 'none', got {fallback!r}"
            )
        address = env.get("KAFKA_SIDECAR_ADDRESS", DEFAULT_ADDRESS).strip() or DEFAULT_ADDRESS
        transport = env.get("KAFKA_SIDECAR_TRANSPORT", "auto").strip().lower() or "auto"
        if transport not in ("auto", "grpc"):
            raise ClientConfigError(
                f"KAFKA_SIDECAR_TRANSPORT must be 'auto' or 'grpc', got {transport!r}"
            )
        return cls(
            mode="sidecar" if mode == "sidecar" else "direct",
            address=address,
            fallback="none" if fallback == "none" else "direct",
            transport="grpc" if transport == "grpc" else "auto",
            app=env.get("KAFKA_SIDECAR_APP", "").strip() or socket.gethostname(),
            batch_max_events=_positive(env, "KAFKA_SIDECAR_BATCH_MAX_EVENTS", 1000),
            batch_max_bytes=_positive(env, "KAFKA_SIDECAR_BATCH_MAX_BYTES", 1_048_576),
            linger_ms=_non_negative(env, "KAFKA_SIDECAR_LINGER_MS", 2.0),
            rpc_timeout_ms=_positive(env, "KAFKA_SIDECAR_RPC_TIMEOUT_MS", 2000),
            probe_interval_ms=_positive(env, "KAFKA_SIDECAR_PROBE_INTERVAL_MS", 1000),
            drain_timeout_ms=_positive(env, "KAFKA_SIDECAR_DRAIN_TIMEOUT_MS", 30_000),
        )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return positive_int(raw, name, ClientConfigError)


def _non_negative(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return number(raw, name, "milliseconds", ClientConfigError, zero=True)


def kafka_limit(config: Mapping[str, Any], key: str, default: int) -> int:
    """An integer limit from the app's confluent config, as librdkafka would read it."""
    raw = config.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ClientConfigError(f"{key} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ClientConfigError(f"{key} must be a positive integer, got {raw!r}")
    return value


def message_timeout(config: Mapping[str, Any]) -> float | None:
    """The app's delivery deadline in seconds (``message.timeout.ms``, alias
    ``delivery.timeout.ms``; librdkafka's default 300000); 0 means none, as in librdkafka."""
    key = "message.timeout.ms" if "message.timeout.ms" in config else "delivery.timeout.ms"
    raw = config.get(key, 300_000)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ClientConfigError(f"{key} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ClientConfigError(f"{key} must be 0 or more, got {raw!r}")
    return value / 1000 if value else None
