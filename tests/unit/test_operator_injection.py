"""The webhook's decision and patch as pure functions: table tests and idempotence."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kafka_sidecar_operator.injection import decide, inject, skip_status
from kafka_sidecar_operator.policies import Policy

pytestmark = pytest.mark.unit
NEVER = ("kube-system", "kafka-sidecar-system")


def policy(name: str = "p", created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Policy:
    body = {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"sidecar": {"bootstrapServers": "k:9092"}, **spec},
    }
    return Policy.from_body(body)


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "ns",
            "labels": {"app": "web"},
            "annotations": {"kafka-sidecar.io/inject": "true", **(annotations or {})},
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec},
    }


@pytest.mark.parametrize(
    ("the_pod", "namespace", "policies", "reason"),
    [
        ({"metadata": {"name": "a"}, "spec": {}}, "ns", [policy()], "no-annotation"),
        (pod({"kafka-sidecar.io/inject": "false"}), "ns", [policy()], "annotation-false"),
        (pod({"kafka-sidecar.io/inject": "yes"}), "ns", [policy()], "invalid-override"),
        (pod(), "kube-system", [policy()], "excluded-namespace"),
        (pod(), "kafka-sidecar-system", [policy()], "excluded-namespace"),
        (pod(hostNetwork=True), "ns", [policy()], "host-network"),
        (pod(initContainers=[{"name": "kafka-sidecar"}]), "ns", [policy()], "already-injected"),
        (pod(containers=[{"name": "kafka-sidecar"}]), "ns", [policy()], "already-injected"),
        (pod(), "ns", [], "no-policy"),
        (pod(), "ns", [policy(selector={"matchLabels": {"app": "other"}})], "no-policy"),
        (pod(), "ns", [policy(paused=True)], "policy-paused"),
        (pod({"kafka-sidecar.io/cpu-limit": "lots"}), "ns", [policy()], "invalid-override"),
        (pod(), "ns", [policy(rollout={"percentage": 0})], "outside-rollout"),
        (pod(), "ns", [policy()], "injected"),
    ],
)
def test_every_decision_has_its_reason(
    the_pod: dict[str, Any], namespace: str, policies: list[Policy], reason: str
) -> None:
    assert decide(the_pod, namespace, policies, NEVER).reason == reason


def test_invalid_override_message_names_the_annotation_and_allowed_values() -> None:
    decision = decide(pod({"kafka-sidecar.io/log-level": "loud"}), "ns", [policy()], NEVER)
    assert decision.message == (
        "annotation kafka-sidecar.io/log-level='loud' is invalid: "
        "expected DEBUG, INFO, WARNING or ERROR"
    )


def test_auto_paused_policy_injects_nothing_while_alerting() -> None:
    body = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"sidecar": {"bootstrapServers": "k:1"}, "fallback": {"autoPause": True}},
        "status": {"alertState": "Firing"},
    }
    assert decide(pod(), "ns", [Policy.from_body(body)], NEVER).reason == "policy-paused"


def test_overlapping_policies_resolve_to_the_oldest_and_say_so() -> None:
    old, new = policy("zeta", "2026-01-01T00:00:00Z"), policy("alpha", "2026-02-01T00:00:00Z")
    decision = decide(pod(), "ns", [new, old], NEVER)
    assert decision.policy == old
    assert decision.overlapping == ("ns/alpha",)
    assert any("ns/alpha" in w for w in inject(pod(), decision, "img").warnings)


def test_injection_adds_a_hardened_native_sidecar_first_and_wires_every_app_container() -> None:
    two_apps = pod(
        containers=[{"name": "app", "image": "a"}, {"name": "worker", "image": "w"}],
        initContainers=[{"name": "migrate", "image": "m"}],
    )
    result = inject(two_apps, decide(two_apps, "ns", [policy()], NEVER), "default:1")
    spec = result.pod["spec"]
    sidecar = spec["initContainers"][0]
    assert [c["name"] for c in spec["initContainers"]] == ["kafka-sidecar", "migrate"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "default:1"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["KAFKA_PRODUCER_BOOTSTRAP_SERVERS"] == "k:9092"
    assert env["KAFKA_SIDECAR_LISTEN"] == "unix:///var/run/kafka-sidecar/sidecar.sock"
    for app in spec["containers"]:
        app_env = {e["name"]: e["value"] for e in app["env"]}
        assert app_env == {
            "KAFKA_SIDECAR_MODE": "sidecar",
            "KAFKA_SIDECAR_ADDRESS": "unix:///var/run/kafka-sidecar/sidecar.sock",
            "KAFKA_SIDECAR_FALLBACK": "direct",
        }
        assert {"name": "kafka-sidecar-socket", "mountPath": "/var/run/kafka-sidecar"} in app[
            "volumeMounts"
        ]
    assert {"name": "kafka-sidecar-socket", "emptyDir": {}} in spec["volumes"]
    # No service-account token in the sidecar: an empty volume already sits at its path.
    assert {
        "name": "kafka-sidecar-no-token",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    } in sidecar["volumeMounts"]
    status = json.loads(result.pod["metadata"]["annotations"]["kafka-sidecar.io/status"])
    assert status["decision"] == "injected"
    assert status["policy"] == "ns/p"
    assert status["image"] == "default:1"
    assert result.pod["metadata"]["labels"]["kafka-sidecar.io/injected"] == "true"
    assert 0 <= status["bucket"] < 100


def test_a_pod_bringing_its_own_sidecar_and_record_is_not_counted_as_injected() -> None:
    copied = inject(pod(), decide(pod(), "ns", [policy()], NEVER), "img").pod
    again = decide(copied, "ns", [policy()], NEVER)
    assert again.reason == "already-injected"
    recorded = skip_status(copied, again)
    assert recorded["spec"] == copied["spec"]  # the containers are left as they came
    status = json.loads(recorded["metadata"]["annotations"]["kafka-sidecar.io/status"])
    assert status["decision"] == "skipped"
    assert "kafka-sidecar.io/injected" not in recorded["metadata"]["labels"]


def test_a_bucket_the_pod_brings_along_is_ignored() -> None:
    unnamed = pod()
    del unnamed["metadata"]["name"]
    ten = [policy(rollout={"percentage": 10, "granularity": "pod"})]
    uid = next(
        u
        for u in (f"u{n}" for n in range(100))
        if not decide(unnamed, "ns", ten, NEVER, request_uid=u).inject
    )
    forged = {"decision": "injected", "bucket": 0.5, "policy": "ns/p"}
    unnamed["metadata"]["annotations"]["kafka-sidecar.io/status"] = json.dumps(forged)
    decision = decide(unnamed, "ns", ten, NEVER, request_uid=uid)
    assert decision.reason == "outside-rollout"
    assert decision.bucket != 0.5


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"containers": None}, "spec.containers is empty"),
        ({"containers": []}, "spec.containers is empty"),
        ({"containers": "app"}, "spec.containers is not a list of objects"),
        ({"containers": [{"name": "app", "env": None}], "volumes": [1]}, "spec.volumes"),
        ({"containers": [{"name": "app", "env": {"A": "1"}}]}, "env of container 'app'"),
        (
            {
                "containers": [{"name": "app"}],
                "volumes": [{"name": "kafka-sidecar-socket", "hostPath": {"path": "/"}}],
            },
            "already defines volume kafka-sidecar-socket",
        ),
    ],
)
def test_malformed_pods_are_skipped_with_a_reason(spec: dict[str, Any], why: str) -> None:
    odd = pod()
    odd["spec"] = spec
    decision = decide(odd, "ns", [policy()], NEVER)
    assert decision.reason == "malformed-pod"
    assert why in decision.message


def test_null_lists_inside_a_valid_pod_are_filled_in_not_crashed_on() -> None:
    sparse = pod(containers=[{"name": "app", "env": None, "volumeMounts": None}])
    sparse["spec"]["initContainers"] = None
    sparse["spec"]["volumes"] = None
    result = inject(sparse, decide(sparse, "ns", [policy()], NEVER), "img")
    assert result.pod["spec"]["initContainers"][0]["name"] == "kafka-sidecar"


@pytest.mark.parametrize(
    ("annotations", "resources", "why"),
    [
        ({"kafka-sidecar.io/memory-request": "1Gi"}, None, "memory request 1Gi would exceed"),
        (
            {"kafka-sidecar.io/cpu-request": "2"},
            {"limits": {"cpu": "500m"}},
            "cpu request 2 would exceed its limit 500m",
        ),
        ({}, {"requests": {"cpu": "lots"}}, "resources.requests.cpu='lots' is not a quantity"),
    ],
)
def test_overrides_that_would_make_the_api_server_refuse_the_pod_are_skipped(
    annotations: dict[str, str], resources: dict[str, Any] | None, why: str
) -> None:
    sidecar = {"bootstrapServers": "k:1", **({"resources": resources} if resources else {})}
    odd = pod({"kafka-sidecar.io/inject": "true", **annotations})
    decision = decide(odd, "ns", [policy(sidecar=sidecar)], NEVER)
    assert decision.reason == "invalid-override"
    assert why in decision.message


def test_existing_env_var_is_kept_and_the_conflict_recorded() -> None:
    own = pod(
        containers=[{"name": "app", "env": [{"name": "KAFKA_SIDECAR_MODE", "value": "direct"}]}]
    )
    result = inject(own, decide(own, "ns", [policy()], NEVER), "img")
    env = result.pod["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "KAFKA_SIDECAR_MODE"] == [
        {"name": "KAFKA_SIDECAR_MODE", "value": "direct"}
    ]
    assert result.env_conflicts == ("app:KAFKA_SIDECAR_MODE",)
    status = json.loads(result.pod["metadata"]["annotations"]["kafka-sidecar.io/status"])
    assert status["envConflicts"] == ["app:KAFKA_SIDECAR_MODE"]


def test_overrides_and_plain_container_mode() -> None:
    annotated = pod(
        {
            "kafka-sidecar.io/native": "false",
            "kafka-sidecar.io/image": "mine:2",
            "kafka-sidecar.io/memory-limit": "1Gi",
            "kafka-sidecar.io/log-level": "DEBUG",
            "kafka-sidecar.io/fallback": "none",
        }
    )
    result = inject(annotated, decide(annotated, "ns", [policy()], NEVER), "img")
    spec = result.pod["spec"]
    assert "initContainers" not in spec
    sidecar = spec["containers"][-1]
    assert sidecar["name"] == "kafka-sidecar"
    assert "restartPolicy" not in sidecar
    assert sidecar["image"] == "mine:2"
    assert sidecar["resources"]["limits"]["memory"] == "1Gi"
    assert {"name": "KAFKA_SIDECAR_LOG_LEVEL", "value": "DEBUG"} in sidecar["env"]
    assert {"name": "KAFKA_SIDECAR_FALLBACK", "value": "none"} in spec["containers"][0]["env"]


def test_producer_config_and_secret_refs_become_sidecar_env() -> None:
    p = policy(
        sidecar={
            "bootstrapServers": "k:1",
            "producerConfig": {"linger.ms": "20"},
            "secretRefs": [{"property": "sasl.password", "name": "kafka", "key": "pw"}],
        }
    )
    sidecar = inject(pod(), decide(pod(), "ns", [p], NEVER), "i").pod["spec"]["initContainers"][0]
    assert {"name": "KAFKA_PRODUCER_LINGER_MS", "value": "20"} in sidecar["env"]
    assert {
        "name": "KAFKA_PRODUCER_SASL_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "kafka", "key": "pw"}},
    } in sidecar["env"]


def test_the_sidecar_learns_its_own_memory_limit_to_size_its_queue() -> None:
    p = policy(sidecar={"bootstrapServers": "k:1"})
    sidecar = inject(pod(), decide(pod(), "ns", [p], NEVER), "i").pod["spec"]["initContainers"][0]
    assert {
        "name": "KAFKA_SIDECAR_MEMORY_LIMIT_BYTES",
        "valueFrom": {
            "resourceFieldRef": {"containerName": "kafka-sidecar", "resource": "limits.memory"}
        },
    } in sidecar["env"]


def test_short_termination_grace_gets_an_admission_warning() -> None:
    short = pod(terminationGracePeriodSeconds=10)
    warnings = inject(short, decide(short, "ns", [policy()], NEVER), "i").warnings
    assert any("terminationGracePeriodSeconds=10 is too short" in w for w in warnings)
    assert not inject(pod(), decide(pod(), "ns", [policy()], NEVER), "i").warnings


def test_skips_are_recorded_on_the_pod() -> None:
    decision = decide(pod(), "ns", [], NEVER)
    recorded = skip_status(pod(), decision)
    assert recorded is not None
    status = json.loads(recorded["metadata"]["annotations"]["kafka-sidecar.io/status"])
    assert (status["decision"], status["reason"]) == ("skipped", "no-policy")
