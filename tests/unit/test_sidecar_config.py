"""Sidecar configuration from the environment: defaults, librdkafka mapping, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kafka_sidecar.config import ConfigError, SidecarConfig

pytestmark = pytest.mark.unit
BASE = {"KAFKA_PRODUCER_BOOTSTRAP_SERVERS": "k:9092"}


def test_defaults_are_safe_for_production() -> None:
    config = SidecarConfig.from_env(BASE)
    assert config.producer["enable.idempotence"] == "true"
    assert config.producer["acks"] == "all"
    assert config.producer["compression.type"] != "none"
    assert config.listen == "unix:///var/run/kafka-sidecar/sidecar.sock"
    assert config.allowed_topics is None


def test_kafka_producer_variables_become_librdkafka_properties() -> None:
    config = SidecarConfig.from_env(
        {**BASE, "KAFKA_PRODUCER_LINGER_MS": "20", "KAFKA_PRODUCER_COMPRESSION_TYPE": "zstd"}
    )
    assert config.producer["linger.ms"] == "20"
    assert config.producer["compression.type"] == "zstd"
    assert config.producer["bootstrap.servers"] == "k:9092"


def test_allow_list_is_split_on_commas() -> None:
    config = SidecarConfig.from_env({**BASE, "KAFKA_SIDECAR_ALLOWED_TOPICS": " a, b-* ,"})
    assert config.allowed_topics == ("a", "b-*")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KAFKA_PRODUCER_BOOTSTRAP_SERVERS is required"),
        ({**BASE, "KAFKA_SIDECAR_LISTEN": "127.0.0.1:5"}, "KAFKA_SIDECAR_LISTEN must be a unix:"),
        ({**BASE, "KAFKA_SIDECAR_LISTEN": "unix:///" + "d/" * 60 + "s.sock"}, "at most 107"),
        (
            {**BASE, "KAFKA_SIDECAR_LISTEN_TCP": "10.0.0.1:5"},
            "KAFKA_SIDECAR_LISTEN_TCP must be a loopback",
        ),
        (
            {**BASE, "KAFKA_SIDECAR_METRICS_ADDR": "nope"},
            "KAFKA_SIDECAR_METRICS_ADDR must be host:port",
        ),
        (
            {**BASE, "KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS": "-1"},
            "KAFKA_SIDECAR_SHUTDOWN_GRACE_SECONDS",
        ),
        (
            {**BASE, "KAFKA_SIDECAR_REPORT_BUFFER_SIZE": "lots"},
            "KAFKA_SIDECAR_REPORT_BUFFER_SIZE must be",
        ),
        ({**BASE, "KAFKA_SIDECAR_LOG_LEVEL": "loud"}, "DEBUG, INFO, WARNING, ERROR"),
        ({**BASE, "KAFKA_SIDECAR_LOG_FORMAT": "xml"}, "text or json"),
        ({**BASE, "KAFKA_PRODUCER_MESSAGE_MAX_BYTES": "0"}, "KAFKA_PRODUCER_MESSAGE_MAX_BYTES"),
    ],
)
def test_bad_value_is_rejected_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SidecarConfig.from_env(env)


def test_serve_exits_2_with_the_reason_on_bad_configuration() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kafka_sidecar", "serve"],
        env={
            "KAFKA_PRODUCER_BOOTSTRAP_SERVERS": "k:1",
            "KAFKA_PRODUCER_NO_SUCH_THING": "1",
            "PATH": "/usr/bin",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "KAFKA_PRODUCER_NO_SUCH_THING" in proc.stderr


def test_memory_limit_derives_librdkafkas_queue_bounds() -> None:
    config = SidecarConfig.from_env({**BASE, "KAFKA_SIDECAR_MEMORY_LIMIT_BYTES": str(256 << 20)})
    assert config.memory_limit_bytes == 256 << 20
    queue_bytes = int(config.producer["queue.buffering.max.kbytes"]) * 1024
    assert 4 << 20 <= queue_bytes <= (256 << 20) // 4
    assert int(config.producer["queue.buffering.max.messages"]) <= 100_000
    assert config.client_max_bytes == queue_bytes // 2


def test_explicit_queue_bounds_win_over_the_memory_limit() -> None:
    config = SidecarConfig.from_env(
        {
            **BASE,
            "KAFKA_SIDECAR_MEMORY_LIMIT_BYTES": str(256 << 20),
            "KAFKA_PRODUCER_QUEUE_BUFFERING_MAX_KBYTES": "1000",
        }
    )
    assert config.producer["queue.buffering.max.kbytes"] == "1000"


def test_without_a_memory_limit_librdkafkas_defaults_stay() -> None:
    config = SidecarConfig.from_env(BASE)
    assert "queue.buffering.max.kbytes" not in config.producer
    assert config.client_max_bytes == 1048576 * 512
