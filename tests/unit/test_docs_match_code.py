"""The reference docs name exactly what the code defines: annotations, variables, CRD fields,
metrics. A rename in code without the docs (or the reverse) fails here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from kafka_sidecar.config import SidecarConfig
from kafka_sidecar.metrics import SidecarMetrics
from kafka_sidecar_client.config import ClientSettings
from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.metrics import REGISTRY as OPERATOR_REGISTRY
from kafka_sidecar_operator.overrides import OVERRIDES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parent.parent.parent
DOCS = {
    name: (ROOT / "docs" / f"{name}.md").read_text() for name in ("client", "sidecar", "operator")
}
MONITORING = ROOT / "manifests" / "monitoring"


def documented_variables(cls: type) -> set[str]:
    """The variables a settings dataclass reads, from its field docstrings' first backticks."""
    source = Path(__import__(cls.__module__, fromlist=["x"]).__file__ or "").read_text()
    return set(re.findall(r'"""``((?:KAFKA_SIDECAR|KAFKA_PRODUCER)[A-Z_]*)``', source))


@pytest.mark.parametrize(
    ("cls", "doc"),
    [(ClientSettings, "client"), (SidecarConfig, "sidecar"), (OperatorConfig, "operator")],
)
def test_every_setting_is_documented(cls: type, doc: str) -> None:
    names = documented_variables(cls)
    assert len(names) >= len([f for f in dataclasses.fields(cls) if f.init]) - 2
    missing = {n for n in names if f"`{n}`" not in DOCS[doc]}
    assert not missing, f"docs/{doc}.md lacks {missing}"


def test_documented_settings_exist_in_code() -> None:
    code = set()
    for cls in (ClientSettings, SidecarConfig, OperatorConfig):
        code |= documented_variables(cls)
    for doc in DOCS.values():
        for name in re.findall(r"`(KAFKA_SIDECAR_[A-Z_]+)`", doc):
            assert name in code or (name.startswith("KAFKA_SIDECAR_OPERATOR_") and name in code), (
                name
            )


def test_every_override_annotation_is_documented_with_its_allowed_values() -> None:
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"^\| `(kafka-sidecar\.io/[a-z-]+)` \| ([^|]+) \|", DOCS["operator"], re.MULTILINE
        )
    }
    for override in OVERRIDES:
        assert override.annotation in table, override.annotation
    documented_overrides = {
        k
        for k in table
        if k
        not in ("kafka-sidecar.io/inject", "kafka-sidecar.io/status", "kafka-sidecar.io/injected")
    }
    assert documented_overrides == {o.annotation for o in OVERRIDES}


def crd_fields(schema: dict[str, object], prefix: str = "") -> set[str]:
    fields = set()
    for name, sub in (schema.get("properties") or {}).items():  # type: ignore[attr-defined]
        path = f"{prefix}.{name}" if prefix else name
        fields.add(path)
        fields |= crd_fields(sub, path)
    return fields


def test_every_crd_spec_field_is_documented() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "kafkasidecarpolicies.kafka-sidecar.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    leaves = {
        f
        for f in crd_fields(schema, "spec")
        if not any(other.startswith(f + ".") for other in crd_fields(schema, "spec"))
    }
    undocumented = {
        f for f in leaves if f.split(".")[-1] not in DOCS["operator"] and f not in DOCS["operator"]
    }
    assert not undocumented
    for field in (
        "spec.rollout.percentage",
        "spec.rollout.granularity",
        "spec.fallback.autoPause",
        "spec.sidecar.secretRefs",
        "spec.fallback.alert.sustainedFor",
    ):
        assert field in DOCS["operator"]


def exported_metric_families() -> set[str]:
    names = set()
    for registry in (SidecarMetrics().registry, OPERATOR_REGISTRY):
        for family in registry.collect():
            names.add(family.name)
            # Labelled families have no samples until first used: name them from the type.
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
            names.update(family.name + s for s in suffixes.get(family.type, ()))
            names.update(sample.name for sample in family.samples)
    return names


def test_every_exported_metric_is_documented_and_every_documented_one_exported() -> None:
    exported = exported_metric_families()
    documented = set()
    for doc in ("sidecar", "operator"):
        documented |= set(re.findall(r"^\| `(kafka_sidecar_[a-z_]+)` \|", DOCS[doc], re.MULTILINE))
    for name in documented:
        assert name in exported, f"{name} is documented but not exported"
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exported}
    for family in families:
        assert any(d.startswith(family) for d in documented), f"{family} is not documented"


def test_dashboard_and_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_families()
    text = "".join(p.read_text() for p in MONITORING.iterdir())
    used = set(re.findall(r"\b(kafka_sidecar_[a-z_]+)\b", text)) - {"kafka_sidecar_dashboard"}
    assert used
    assert used <= exported, used - exported
