"""The event checks, as a table: each rule's error code and the field its message names."""

from __future__ import annotations

import pytest

from kafka_sidecar.validation import (
    check_headers,
    check_identity,
    check_partition,
    check_size,
    check_topic,
)
from kafka_sidecar_api.v1.sidecar_pb2 import ErrorCode

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("topic", ["a", "orders.v1", "A_b-C.9", "x" * 249])
def test_legal_topic_names_pass(topic: str) -> None:
    assert check_topic(topic, None) is None


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("", ErrorCode.ERROR_CODE_INVALID_REQUEST),
        (".", ErrorCode.ERROR_CODE_INVALID_TOPIC),
        ("..", ErrorCode.ERROR_CODE_INVALID_TOPIC),
        ("x" * 250, ErrorCode.ERROR_CODE_INVALID_TOPIC),
        ("has space", ErrorCode.ERROR_CODE_INVALID_TOPIC),
        ("ünïcode", ErrorCode.ERROR_CODE_INVALID_TOPIC),
    ],
)
def test_illegal_topic_names_are_refused(topic: str, code: int) -> None:
    rejection = check_topic(topic, None)
    assert rejection is not None
    assert rejection.code == code
    assert "topic" in rejection.message


def test_allow_list_takes_exact_names_and_prefix_patterns() -> None:
    allowed = ("orders", "audit-*")
    assert check_topic("orders", allowed) is None
    assert check_topic("audit-eu", allowed) is None
    rejection = check_topic("payments", allowed)
    assert rejection is not None
    assert rejection.code == ErrorCode.ERROR_CODE_TOPIC_NOT_ALLOWED
    assert "KAFKA_SIDECAR_ALLOWED_TOPICS=orders,audit-*" in rejection.message


def test_header_rules() -> None:
    assert check_headers(["a", "b"]) is None
    empty = check_headers(["a", ""])
    assert empty is not None
    assert "headers[1].key" in empty.message
    reserved = check_headers(["kafka-sidecar-id"])
    assert reserved is not None
    assert reserved.code == ErrorCode.ERROR_CODE_INVALID_HEADERS


def test_size_identity_and_partition_rules() -> None:
    assert check_size(100, 100) is None
    too_big = check_size(101, 100)
    assert too_big is not None
    assert too_big.code == ErrorCode.ERROR_CODE_MESSAGE_TOO_LARGE
    assert check_identity(1) is None
    zero = check_identity(0)
    assert zero is not None
    assert "sequence" in zero.message
    assert check_partition(0) is None
    assert check_partition(-1) is None
    negative = check_partition(-2)
    assert negative is not None
    assert "partition" in negative.message
