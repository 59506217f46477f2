"""The operator against the real kube-apiserver: CRD validation, injection, skips, status, kubectl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from tests.support import (
    create_policy,
    kubectl,
    pod_body,
    policy_body,
    status_of,
    wait_for,
    wait_policy_active,
)

pytestmark = pytest.mark.integration
SAMPLES = Path(__file__).parent.parent.parent / "manifests" / "samples"


# -- the CRD ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("kafkasidecarpolicy-*")))
def test_samples_are_accepted_by_the_api_server(
    control_plane: ControlPlane, crd_installed: None, namespace: str, sample: str
) -> None:
    kubectl(
        control_plane, "apply", "--dry-run=server", "-n", namespace, "-f", str(SAMPLES / sample)
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rollout": {"percentage": 150}}, "spec.rollout.percentage: Invalid value: 150"),
        ({"rollout": {"granularity": "node"}}, 'supported values: "pod", "workload"'),
        ({"sidecar": {}}, "spec.sidecar.bootstrapServers: Required value"),
        (
            {"fallback": {"alert": {"window": "1m", "sustainedFor": "5m"}}},
            "fallback.alert.sustainedFor must not be longer than fallback.alert.window",
        ),
        ({"fallback": {"alert": {"window": "five minutes"}}}, "spec.fallback.alert.window"),
        ({"fallback": {"alert": {"maxRatio": 2}}}, "spec.fallback.alert.maxRatio"),
        (
            {
                "sidecar": {
                    "bootstrapServers": "k:1",
                    "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
                }
            },
            "resources.requests.memory must not exceed resources.limits.memory",
        ),
        (
            {"sidecar": {"bootstrapServers": "k:1", "producerConfig": {"bootstrap.servers": "x"}}},
            "set bootstrap servers in sidecar.bootstrapServers",
        ),
        (
            {"sidecar": {"bootstrapServers": "k:1", "producerConfig": {"Linger_MS": "5"}}},
            "producerConfig keys must be librdkafka property names",
        ),
        *(
            (
                {"sidecar": {"bootstrapServers": "k:1", "producerConfig": {key: "hunter2"}}},
                "producerConfig must not hold credentials",
            )
            for key in (
                "sasl.password",
                "ssl.key.password",
                "ssl.keystore.password",
                "ssl.key.pem",
                "sasl.oauthbearer.client.secret",
            )
        ),
    ],
)
def test_invalid_policy_is_rejected_with_a_message_naming_the_field(
    control_plane: ControlPlane,
    crd_installed: None,
    namespace: str,
    spec: dict[str, Any],
    message: str,
) -> None:
    body = policy_body("bad")
    body["spec"].update(spec)
    proc = kubectl(
        control_plane, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(body), check=False
    )
    assert proc.returncode != 0
    assert message in proc.stderr


# -- injection ----------------------------------------------------------------------------------


def test_annotated_pod_in_an_enabled_namespace_is_injected(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    core.create_namespaced_pod(enabled_namespace, pod_body("web-1"))
    stored = core.read_namespaced_pod("web-1", enabled_namespace)
    assert [c.name for c in stored.spec.init_containers] == ["kafka-sidecar"]
    assert stored.spec.init_containers[0].restart_policy == "Always"
    assert {e.name: e.value for e in stored.spec.containers[0].env}[
        "KAFKA_SIDECAR_MODE"
    ] == "sidecar"
    assert status_of(stored)["decision"] == "injected"


def test_pods_not_asking_or_not_enabled_are_left_alone(
    api_client: k8s.ApiClient, enabled_namespace: str, namespace: str
) -> None:
    create_policy(api_client, enabled_namespace)
    create_policy(api_client, namespace)
    core = k8s.CoreV1Api(api_client)
    core.create_namespaced_pod(enabled_namespace, pod_body("plain", annotations={}))
    plain = core.read_namespaced_pod("plain", enabled_namespace)
    assert plain.spec.init_containers is None
    assert status_of(plain)["reason"] == "no-annotation"
    core.create_namespaced_pod(namespace, pod_body("elsewhere"))  # namespace not labelled
    elsewhere = core.read_namespaced_pod("elsewhere", namespace)
    assert elsewhere.spec.init_containers is None
    assert status_of(elsewhere) == {}  # the webhook was never called


def test_bad_override_admits_the_pod_without_the_sidecar_and_says_why(
    api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace)
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)  # the decision must come from the policy
    annotations = {"kafka-sidecar.io/inject": "true", "kafka-sidecar.io/cpu-limit": "plenty"}
    core.create_namespaced_pod(enabled_namespace, pod_body("bad", annotations=annotations))
    stored = core.read_namespaced_pod("bad", enabled_namespace)
    assert stored.spec.init_containers is None
    status = status_of(stored)
    assert status["reason"] == "invalid-override"
    assert "kafka-sidecar.io/cpu-limit='plenty'" in status["message"]
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(enabled_namespace).items
            if e.reason == "InjectionSkipped"
        ],
        what="an InjectionSkipped Event",
    )
    assert "cpu-limit" in events[0].message


def test_kubectl_get_ksp_shows_the_rollout_columns(
    api_client: k8s.ApiClient, control_plane: ControlPlane, enabled_namespace: str
) -> None:
    create_policy(api_client, enabled_namespace, name="orders", rollout={"percentage": 100})
    core = k8s.CoreV1Api(api_client)
    wait_policy_active(core, enabled_namespace)
    for n in range(3):
        core.create_namespaced_pod(enabled_namespace, pod_body(f"web-{n}"))

    def line() -> str | None:
        out = kubectl(control_plane, "get", "ksp", "-n", enabled_namespace).stdout
        return out if " 3 " in out.splitlines()[1] else None

    output = wait_for(line, what="status with 3 matched pods")
    header, row = output.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "TARGET",
        "MATCHED",
        "INJECTED",
        "ACTUAL",
        "FALLBACK",
        "ALERT",
        "SAVED",
        "AGE",
    ]
    assert row.split()[:8] == ["orders", "100", "3", "3", "100%", "-", "Ok", "0"]
    described = kubectl(control_plane, "describe", "ksp", "orders", "-n", enabled_namespace).stdout
    for condition in ("Ready", "RolloutProgressing", "FallbackAlert"):
        assert condition in described


def test_operator_metrics_count_decisions_by_reason(
    operator: OperatorProcess, api_client: k8s.ApiClient, enabled_namespace: str
) -> None:
    k8s.CoreV1Api(api_client).create_namespaced_pod(
        enabled_namespace, pod_body("m", annotations={})
    )
    text = operator.metrics()
    assert (
        'kafka_sidecar_operator_injections_total{reason="no-annotation",result="skipped"}' in text
    )
    assert "kafka_sidecar_operator_webhook_duration_seconds_bucket" in text
