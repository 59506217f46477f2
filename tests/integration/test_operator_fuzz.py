"""Admission fuzzing: generated pods of every odd shape through the real API server and webhook.

Each pod is created (dry run) twice: in a namespace the webhook does not see, and in one it
does. The webhook must never turn a pod the API server accepts into one it refuses, never fail
(its failures would be ignored, so the operator's own error metric is checked), and must answer
every pod that asks for the sidecar.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s

from kafka_sidecar_localenv.operator import OperatorProcess
from tests.integration.test_operator_in_cluster import counter
from tests.support import create_policy, wait_policy_active

pytestmark = pytest.mark.integration

OURS = [
    "kafka-sidecar.io/status",
    "kafka-sidecar.io/image",
    "kafka-sidecar.io/cpu-request",
    "kafka-sidecar.io/cpu-limit",
    "kafka-sidecar.io/memory-request",
    "kafka-sidecar.io/memory-limit",
    "kafka-sidecar.io/native",
    "kafka-sidecar.io/metrics-port",
    "kafka-sidecar.io/shutdown-grace-seconds",
    "kafka-sidecar.io/log-level",
]
# Mostly valid shapes (so the API server accepts many), with our own names and odd values mixed in.
NAMES = st.sampled_from(["app", "kafka-sidecar", "worker", "sidecar-2"])
odd_text = st.text(max_size=40) | st.sampled_from(["", "true", "1Gi", "250m", "-1", "9e99", "{}"])
huge_text = st.integers(1, 200).map(lambda kib: "é" * (kib * 512))
label_value = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True)

env = st.fixed_dictionaries(
    {"name": st.sampled_from(["KAFKA_SIDECAR_MODE", "KAFKA_SIDECAR_FALLBACK", "A", "B_2"])},
    optional={"value": odd_text},
)
port = st.fixed_dictionaries(
    {"name": st.sampled_from(["ks-metrics", "http"]), "containerPort": st.integers(1, 65535)}
)
rarely_none = st.sampled_from([False] * 9 + [True])


def containers(
    volumes: list[str], min_size: int, max_size: int
) -> st.SearchStrategy[list[dict[str, Any]]]:
    mount = st.fixed_dictionaries(
        {
            "name": st.sampled_from(volumes or ["none"]),
            "mountPath": st.sampled_from(["/var/run/kafka-sidecar", "/data", "/other"]),
        }
    )
    mounts = st.lists(mount, max_size=2 if volumes else 0, unique_by=lambda m: m["mountPath"])
    one = st.fixed_dictionaries(
        {"name": NAMES, "image": st.just("app:1")},
        optional={
            "env": st.none() | st.lists(env, max_size=3, unique_by=lambda e: e["name"]),
            "volumeMounts": st.none() | mounts,
            "ports": st.lists(port, max_size=2, unique_by=lambda p: p["name"]),
        },
    )
    return st.lists(one, min_size=min_size, max_size=max_size, unique_by=lambda c: c["name"])


owner = st.fixed_dictionaries(
    {
        "apiVersion": st.just("apps/v1"),
        "kind": st.sampled_from(["ReplicaSet", "Job", "StatefulSet"]),
        "name": NAMES,
        "uid": st.just("u-1"),
    },
    optional={"controller": st.booleans()},
)
metadata = st.fixed_dictionaries(
    {
        "generateName": st.sampled_from(["web-"] * 9 + ["Web-"]),
        "annotations": st.tuples(
            st.fixed_dictionaries(
                {"kafka-sidecar.io/inject": st.sampled_from(["true", "true", "TRUE", "no"])},
                optional={"big": huge_text, "note": odd_text},
            ),
            st.dictionaries(st.sampled_from(OURS), odd_text, max_size=2),
        ).map(lambda parts: {**parts[1], **parts[0]}),
    },
    optional={
        "labels": st.dictionaries(
            st.sampled_from(["app", "kafka-sidecar.io/injected", "tier", "pod-template-hash"]),
            label_value,
            max_size=3,
        ),
        "ownerReferences": st.lists(owner, max_size=1),
    },
)


def spec(volumes: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    app = st.tuples(rarely_none, containers(volumes, 1, 3)).map(lambda t: None if t[0] else t[1])
    return st.fixed_dictionaries(
        {
            "containers": app,
            "volumes": st.just([{"name": v, "emptyDir": {}} for v in volumes])
            if volumes
            else st.sampled_from([[], None]),
        },
        optional={
            "initContainers": st.none() | containers(volumes, 0, 2),
            "hostNetwork": st.booleans(),
            "terminationGracePeriodSeconds": st.none() | st.integers(0, 100),
        },
    )


volume_names = st.lists(
    st.sampled_from(["kafka-sidecar-socket", "kafka-sidecar-no-token", "data"]),
    max_size=3,
    unique=True,
)
pods = st.tuples(metadata, volume_names.flatmap(spec)).map(
    lambda t: {"metadata": t[0], "spec": t[1]}
)


class RawApi:
    """POST raw JSON to the API server (the client library would refuse the odd shapes)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        config = api.configuration
        self.host = config.host
        self.context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        self.context.load_cert_chain(config.cert_file, config.key_file)

    def dry_run_create(self, namespace: str, pod: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.host}/api/v1/namespaces/{namespace}/pods?dryRun=All",
            data=json.dumps(pod).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def test_generated_pods_are_never_blocked_nor_fail_the_webhook(
    operator: OperatorProcess, api_client: k8s.ApiClient, enabled_namespace: str, namespace: str
) -> None:
    create_policy(api_client, enabled_namespace, rollout={"percentage": 50, "granularity": "pod"})
    wait_policy_active(k8s.CoreV1Api(api_client), enabled_namespace, expect=None)
    raw = RawApi(api_client)
    errors_before = counter(operator.metrics(), "internal-error", "error")
    tried = {"accepted": 0, "refused by the API server alone": 0}

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(pod=pods)
    def check(pod: dict[str, Any]) -> None:
        plain, _ = raw.dry_run_create(namespace, pod)
        code, stored = raw.dry_run_create(enabled_namespace, pod)
        assert code < 500, (code, stored)
        if plain == 201:
            assert code == 201, ("the webhook made an accepted pod refused", stored)
            tried["accepted"] += 1
        else:
            tried["refused by the API server alone"] += 1
        asks = pod["metadata"]["annotations"]["kafka-sidecar.io/inject"] == "true"
        if code == 201 and asks:
            assert "kafka-sidecar.io/status" in stored["metadata"]["annotations"], stored

    check()
    print(tried)
    assert tried["accepted"] >= 10  # the generator reaches past the API server's validation
    assert counter(operator.metrics(), "internal-error", "error") == errors_before
