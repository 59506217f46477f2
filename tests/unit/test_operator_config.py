"""The operator's settings: what each variable turns into, and the errors users see."""

from __future__ import annotations

import getpass

import pytest

from kafka_sidecar_operator.config import OperatorConfig

pytestmark = pytest.mark.unit


def test_peering_identity_is_the_configured_name_when_set() -> None:
    config = OperatorConfig.from_env({"KAFKA_SIDECAR_OPERATOR_IDENTITY": " operator-7d9-x2 "})
    assert config.peering_identity("host", 42) == "operator-7d9-x2"


def test_peering_identity_never_asks_the_password_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    config = OperatorConfig.from_env({})
    assert config.peering_identity("operator-7d9-x2", 1) == "operator-7d9-x2/1"
    assert config.peering_identity("", 1) == "kafka-sidecar-operator/1"
