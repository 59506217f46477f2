"""The wire contract is written once, in the API package, and agrees with the .proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_sidecar_api import contract
from kafka_sidecar_api.v1 import sidecar_pb2

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("client/kafka_sidecar_client", "sidecar/kafka_sidecar", "operator")


def test_the_health_service_is_the_protos_service() -> None:
    assert (
        sidecar_pb2.DESCRIPTOR.services_by_name["ProducerSidecar"].full_name
        == contract.HEALTH_SERVICE
    )


def test_client_outcomes_are_the_topic_counter_fields_in_order() -> None:
    fields = [f.name for f in sidecar_pb2.TopicCounters.DESCRIPTOR.fields]
    assert tuple(fields[1:]) == contract.CLIENT_OUTCOMES


def test_producer_properties_and_their_variables_round_trip() -> None:
    assert contract.producer_env_name("queue.buffering.max.kbytes") == (
        "KAFKA_PRODUCER_QUEUE_BUFFERING_MAX_KBYTES"
    )
    assert contract.producer_property("KAFKA_PRODUCER_LINGER_MS") == "linger.ms"
    assert contract.producer_property("KAFKA_PRODUCER_") is None
    assert contract.producer_property("KAFKA_SIDECAR_LISTEN") is None


@pytest.mark.parametrize(
    "literal",
    ['"kafka-sidecar-id"', '"/var/run/kafka-sidecar', '"kafka_sidecar.v1.ProducerSidecar"'],
)
def test_no_package_keeps_its_own_copy_of_a_contract_value(literal: str) -> None:
    copies = [
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if literal in path.read_text()
    ]
    assert copies == []
