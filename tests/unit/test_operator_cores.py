"""The operator's pure cores behind replicas, scraping and admission: table tests."""

from __future__ import annotations

import datetime
import gzip
from decimal import Decimal
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from kafka_sidecar_operator import rotation
from kafka_sidecar_operator.conditions import PodView, count, count_all
from kafka_sidecar_operator.fallback import FallbackTracker, PodSample
from kafka_sidecar_operator.leadership import leading
from kafka_sidecar_operator.pod_record import kept_record
from kafka_sidecar_operator.policies import Policy
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.quantities import parse_quantity, resource_problem
from kafka_sidecar_operator.scraping import BodyRefused, BoundedBody
from kafka_sidecar_operator.webhook import client_config_for, pin_namespace, webhook_configuration

pytestmark = pytest.mark.unit
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def body(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"sidecar": {}}}


def test_the_policy_view_is_complete_only_once_every_scope_was_listed() -> None:
    view = PolicyView(scopes=("a", "b"))
    view.replace("a", [body("a", "p")])
    after_one = view.complete
    view.replace("b", [])
    assert (after_one, view.complete) == (False, True)
    assert [p.key for p in view.all()] == ["a/p"]


def test_the_policy_view_follows_watch_events_and_a_relist_forgets_the_rest() -> None:
    view = PolicyView()
    view.replace("", [body("a", "p"), body("b", "q")])
    view.apply("ADDED", body("a", "r"))
    view.apply("DELETED", body("b", "q"))
    assert sorted(p.key for p in view.all()) == ["a/p", "a/r"]
    assert view.in_namespace("b") == ()
    view.replace("", [body("c", "s")])
    assert [p.key for p in view.all()] == ["c/s"]


def peer(priority: int, seconds_ago: float = 0, lifetime: int = 60) -> dict[str, Any]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ({}, True),
        ({"me": peer(5)}, True),
        ({"me": peer(5), "other": peer(3)}, True),
        ({"me": peer(5), "other": peer(9)}, False),
        ({"me": peer(5), "other": peer(5)}, False),  # kopf pauses both on a tie
        ({"me": peer(5), "other": peer(9, seconds_ago=120)}, True),  # dead peer
        ({"me": peer(5), "other": {"priority": "x"}}, True),
    ],
)
def test_a_replica_leads_when_kopf_would_not_pause_it(
    peers: dict[str, Any], expected: bool
) -> None:
    assert leading(peers, "me", 5, NOW) is expected


def test_a_bounded_body_refuses_a_gzip_bomb_before_it_expands() -> None:
    bomb = gzip.compress(bytes(64 << 20))
    reader = BoundedBody("gzip", limit=1 << 20)
    with pytest.raises(BodyRefused, match="once decompressed"):
        reader.feed(bomb)
    assert len(reader.text()) <= (1 << 20) + 1


def test_a_bounded_body_reads_plain_and_gzip_and_refuses_unknown_encodings() -> None:
    plain = BoundedBody("")
    plain.feed(b"abc")
    assert plain.text() == "abc"
    zipped = BoundedBody("gzip")
    zipped.feed(gzip.compress(b"metrics"))
    assert zipped.text() == "metrics"
    with pytest.raises(BodyRefused):
        BoundedBody("br")
    big = BoundedBody("identity", limit=4)
    with pytest.raises(BodyRefused):
        big.feed(b"12345")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("250m", Decimal("0.25")),
        ("1", Decimal(1)),
        ("64Mi", Decimal(64 << 20)),
        ("1e3", Decimal(1000)),
        ("1.5Gi", Decimal(3 << 29)),
        ("lots", None),
        ("1Qi", None),
        ("", None),
        ("1e99", None),
    ],
)
def test_quantities_parse_like_kubernetes(raw: str, value: Decimal | None) -> None:
    assert parse_quantity(raw) == value


def test_resources_with_a_request_above_its_limit_are_a_problem() -> None:
    assert resource_problem({"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}) is None
    assert "exceed" in (resource_problem({"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}) or "")
    assert "quantity" in (resource_problem({"limits": {"memory": "big"}}) or "")


def test_a_resumed_firing_alert_holds_until_a_full_interval_is_measured() -> None:
    tracker = FallbackTracker.resume("Firing", 100.0, sustained_for=2)
    healthy = [PodSample("a", attempts=10, fallback=0)]
    assert tracker.observe(100.0, healthy, window=60, max_ratio=0.1, sustained_for=2) == "Firing"
    assert tracker.ratio is None
    more = [PodSample("a", attempts=20, fallback=0)]
    assert tracker.observe(101.0, more, window=60, max_ratio=0.1, sustained_for=2) == "Ok"


def test_a_review_is_decided_for_the_namespace_the_request_names() -> None:
    review = {"request": {"namespace": "mine", "object": {"metadata": {"namespace": "theirs"}}}}
    pin_namespace(review)
    assert review["request"]["object"]["metadata"]["namespace"] == "mine"


HOSTS = ("kafka-sidecar-webhook.ns.svc",)


def verifies(leaf: bytes, bundle: bytes, at: datetime.datetime) -> bool:
    """Whether a client trusting ``bundle`` accepts ``leaf`` at ``at``: signed by a CA of the
    bundle, and both within their validity."""
    cert = x509.load_pem_x509_certificate(leaf)

    def valid(c: x509.Certificate) -> bool:
        return c.not_valid_before_utc <= at <= c.not_valid_after_utc

    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if valid(ca) and valid(cert):
            return True
    return False


def test_renewing_the_serving_certificate_keeps_the_ca_and_the_bundle() -> None:
    now = datetime.datetime.now(datetime.UTC)  # certificates are minted at the real time
    first = rotation.plan(None, HOSTS, now)
    assert first is not None
    assert rotation.plan(first, HOSTS, now) is None  # nothing to do yet
    due = now + datetime.timedelta(days=25)  # the 30-day serving certificate is due
    second = rotation.plan(first, HOSTS, due)
    assert second is not None
    assert second.cert != first.cert
    assert (second.ca_cert, second.bundle) == (first.ca_cert, first.bundle)
    assert verifies(first.cert, second.bundle, now)  # a replica still serving the old one
    assert verifies(second.cert, first.bundle, now)  # a caBundle not yet updated


def test_renewing_the_ca_trusts_old_and_new_until_the_old_expires() -> None:
    now = datetime.datetime.now(datetime.UTC)
    first = rotation.plan(None, HOSTS, now)
    assert first is not None
    second = rotation.plan(first, HOSTS, now + datetime.timedelta(days=300))  # the CA is due
    assert second is not None
    assert second.ca_cert != first.ca_cert
    assert len(x509.load_pem_x509_certificates(second.bundle)) == 2
    assert verifies(first.cert, second.bundle, now)  # the old CA's certificate, still served
    assert verifies(second.cert, second.bundle, now)
    third = rotation.plan(second, HOSTS, now + datetime.timedelta(days=366))
    assert third is not None
    assert len(x509.load_pem_x509_certificates(third.bundle)) == 1  # expired CAs leave


def test_counting_all_policies_at_once_gives_each_policy_its_own_count() -> None:
    def policy(name: str, app: str | None, created: str) -> Policy:
        selector = {"matchLabels": {"app": app}} if app else {}
        return Policy.from_body(
            {
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "spec": {"selector": selector, "sidecar": {"bootstrapServers": "k"}},
            }
        )

    def pod(name: str, app: str) -> PodView:
        return PodView.from_body(
            {
                "metadata": {
                    "name": name,
                    "namespace": "ns",
                    "labels": {"app": app},
                    "annotations": {"kafka-sidecar.io/inject": "true"},
                },
                "spec": {"containers": [{"name": "app"}]},
            }
        )

    policies = [policy("all", None, "2026-01-02"), policy("web", "web", "2026-01-01")]
    pods = [pod("a", "web"), pod("b", "web"), pod("c", "db")]
    together = count_all(policies, pods)
    assert together == {p.key: count(p, policies, pods) for p in policies}
    assert (together["ns/web"].matched, together["ns/all"].matched) == (2, 1)
    assert together["ns/all"].overlapping == ("ns/web",)


def test_an_update_keeps_the_record_and_label_the_pod_had() -> None:
    def pod(record: str | None, label: str | None, note: str) -> dict[str, Any]:
        annotations = {"note": note, **({"kafka-sidecar.io/status": record} if record else {})}
        labels = {"app": "web", **({"kafka-sidecar.io/injected": label} if label else {})}
        return {"metadata": {"annotations": annotations, "labels": labels}}

    old = pod('{"decision": "skipped"}', None, "a")
    assert kept_record(old, pod('{"decision": "skipped"}', None, "b")) is None
    kept = kept_record(old, pod('{"decision": "injected"}', "true", "b"))
    assert kept == pod('{"decision": "skipped"}', None, "b")
    assert kept_record(pod(None, None, "a"), pod("{}", None, "a")) == pod(None, None, "a")


def test_both_webhooks_reach_the_same_server_at_their_own_paths() -> None:
    by_url = webhook_configuration("n", {"url": "https://h:1/inject-sidecar"}, ("kube-system",))
    hooks = {h["name"]: h for h in by_url["webhooks"]}
    assert hooks["keep-record.kafka-sidecar.io"]["clientConfig"]["url"] == "https://h:1/keep-record"
    assert hooks["keep-record.kafka-sidecar.io"]["rules"][0]["operations"] == ["UPDATE"]
    service = {"service": {"name": "s", "namespace": "ns", "path": "/inject-sidecar"}}
    assert client_config_for(service, "keep-record")["service"]["path"] == "/keep-record"
