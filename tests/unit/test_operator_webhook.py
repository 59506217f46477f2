"""The webhook's wire format and its admission handlers as plain functions of a review."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.handlers.admission import Admission
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.webhook import (
    HANDLER_ID,
    RECORD_HANDLER_ID,
    InvalidReview,
    admission_response,
    json_patch,
)
from tests.support import pod_body, policy_body

pytestmark = pytest.mark.unit


def apply(document: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/replace/remove on objects, enough to check ``json_patch``."""
    document = copy.deepcopy(document)
    for op in ops:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        if not keys:
            document = op["value"]
            continue
        parent = document
        for key in keys[:-1]:
            parent = parent[key]
        if op["op"] == "remove":
            del parent[keys[-1]]
        else:
            assert (keys[-1] in parent) == (op["op"] == "replace"), op
            parent[keys[-1]] = op["value"]
    return document


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b/c", "d~e", "f"]), inner, max_size=3)
    ),
    max_leaves=12,
)


# Generation is cheap but the machine may be busy (CI runs beside brokers): no timing checks.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b/c", "~"]), JSON),
    st.dictionaries(st.sampled_from(["a", "b/c", "~"]), JSON),
)
def test_a_json_patch_turns_the_pod_into_the_mutated_pod(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    ops = json_patch(before, after)
    assert apply(before, ops) == after
    assert (ops == []) == (before == after)  # key order is not a change


def test_an_answer_is_allowed_with_its_patch_in_base64_and_its_warnings() -> None:
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
    review["request"] = {"uid": "u-1"}  # type: ignore[assignment]
    ops = [{"op": "add", "path": "/a", "value": 1}]
    answer = admission_response(review, ops, ["careful"])
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "u-1"
    assert response["allowed"] is True
    assert response["warnings"] == ["careful"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == ops
    assert admission_response(review, [])["response"] == {"uid": "u-1", "allowed": True}


def review(operation: str, pod: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "namespace": "ns",
            "operation": operation,
            "object": pod,
            **request,
        },
    }


def status_in(answer: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    ops = json.loads(base64.b64decode(answer["response"].get("patch") or "W10="))
    patched = apply(pod, ops)
    return dict(json.loads(patched["metadata"]["annotations"]["kafka-sidecar.io/status"]))


def admission(listed: bool = True) -> Admission:
    view = PolicyView()
    if listed:
        body = policy_body("p", rollout={"percentage": 100, "granularity": "pod"})
        body["metadata"].update(namespace="ns", creationTimestamp="2026-01-01T00:00:00Z")
        view.replace("", [body])
    return Admission(OperatorConfig.from_env({}), view, api=None)


def test_injection_answers_from_the_view_for_the_namespace_of_the_request() -> None:
    pod = pod_body("web")
    answer = admission().answer(HANDLER_ID, review("CREATE", pod))
    assert status_in(answer, pod)["reason"] == "injected"
    # The object claims a namespace without policies; the request's is the one decided for.
    claimed = {**pod, "metadata": {**pod["metadata"], "namespace": "other"}}
    answer = admission().answer(HANDLER_ID, review("CREATE", claimed))
    assert status_in(answer, pod)["reason"] == "injected"


def test_a_replica_whose_view_is_not_listed_admits_pods_unchanged() -> None:
    answer = admission(listed=False).answer(HANDLER_ID, review("CREATE", pod_body("web")))
    assert answer["response"] == {"uid": "u-1", "allowed": True}


def test_the_record_keeper_puts_back_the_record_an_update_changed() -> None:
    pod = pod_body("web")
    created = admission().answer(HANDLER_ID, review("CREATE", pod))
    injected = apply(pod, json.loads(base64.b64decode(created["response"]["patch"])))
    edited = copy.deepcopy(injected)
    edited["metadata"]["annotations"]["kafka-sidecar.io/status"] = "{}"
    edited["metadata"]["labels"].pop("kafka-sidecar.io/injected")
    answer = admission().answer(RECORD_HANDLER_ID, review("UPDATE", edited, oldObject=injected))
    kept = apply(edited, json.loads(base64.b64decode(answer["response"]["patch"])))
    assert kept["metadata"] == {**injected["metadata"], "namespace": "ns"}
    unchanged = admission().answer(
        RECORD_HANDLER_ID, review("UPDATE", injected, oldObject=injected)
    )
    assert "patch" not in unchanged["response"]


@pytest.mark.parametrize("body", [[], {"kind": "AdmissionReview"}, {"request": "x"}])
def test_a_body_that_is_no_review_is_refused(body: Any) -> None:
    with pytest.raises(InvalidReview):
        admission().answer(HANDLER_ID, body)
