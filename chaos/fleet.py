"""A fleet of sample-app pods producing keyed sequences through their sidecars, for one fault run.

Each run gets its own namespace (injection enabled, the restricted Pod Security Standard), a fresh
topic replicated on all three brokers, the "orders" policy and a Deployment of the sample app. The
app containers' logs are followed from the moment each pod's app starts — also pods a rolling
restart creates — because each worker prints its delivery report only when it is stopped.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from kubernetes import client as k8s

from kafka_sidecar_localenv import connections
from kafka_sidecar_localenv.delivery import Delivery, verify
from kafka_sidecar_localenv.images import SAMPLE_APP_IMAGE
from kafka_sidecar_localenv.node import RealNode
from kafka_sidecar_localenv.podlogs import FollowedLog
from kafka_sidecar_localenv.sample_app import opted_in_pod, sample_app_deployment

SIDECAR = "kafka-sidecar"
PARTITIONS = 6
POLICY = "orders"


class Background:
    """A loop on a daemon thread, told to end by the event it is given: the suite's samplers."""

    def __init__(self, loop: Callable[[threading.Event], None]) -> None:
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=loop, args=(self.stopping,), daemon=True)

    def start(self) -> Background:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.thread.join(timeout)


@dataclass(frozen=True)
class Shape:
    """How big a run's fleet is and what each app process offers."""

    pods: int = 2
    workers: int = 2
    rate: int = 100  # events/s per worker
    queue_messages: int = 0  # the apps' own queue (queue.buffering.max.messages); 0: default


def container_pids(pod: Any, name: str) -> list[int]:
    """Host pids of one container of ``pod`` (empty while it is not running)."""
    statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
    for status in statuses:
        if status.name == name and status.container_id and status.state.running is not None:
            return connections.container_pids(status.container_id.split("://", 1)[1])
    return []


def app_running(pod: Any) -> bool:
    return any(
        s.name == "app" and s.state.running is not None for s in pod.status.container_statuses or []
    )


def app_started(pod: Any) -> bool:
    return any(
        s.name == "app" and (s.state.running is not None or s.state.terminated is not None)
        for s in pod.status.container_statuses or []
    )


@dataclass
class Fleet:
    """The namespace, topic, policy and Deployment of one run, and every app log."""

    node: RealNode
    api: k8s.ApiClient
    shape: Shape
    namespace: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")
    topic: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")
    logs: dict[str, FollowedLog] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # every pod of the Deployment ever listed
    # Pods whose app did not report once per worker when it stopped (filled by ``stop``).
    unreported: list[str] = field(default_factory=list)
    modes: set[str] = field(default_factory=set)  # filled by ``stop``, from the reports
    app_restarts: int = 0  # the most any app container restarted (its report would be lost)
    _follower: Background | None = None

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def bootstrap(self) -> str:
        assert self.node.kafka is not None
        return self.node.kafka.bootstrap_servers

    def start(self, policy: dict[str, Any]) -> Fleet:
        """Everything up, the pods running with every container ready, their logs followed."""
        labels = {
            "kafka-sidecar.io/injection": "enabled",
            "pod-security.kubernetes.io/enforce": "restricted",
        }
        self.core.create_namespace({"metadata": {"name": self.namespace, "labels": labels}})
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(self.topic, PARTITIONS, replication_factor=3)])
        futures[self.topic].result(30)
        self.apply_policy(policy)
        body = sample_app_deployment(
            "orders", SAMPLE_APP_IMAGE, self.bootstrap, self.topic,
            self.shape.workers, self.shape.rate, replicas=self.shape.pods,
        )  # fmt: skip
        if self.shape.queue_messages:
            env = body["spec"]["template"]["spec"]["containers"][0]["env"]
            env.append({"name": "APP_QUEUE_MESSAGES", "value": str(self.shape.queue_messages)})
        k8s.AppsV1Api(self.api).create_namespaced_deployment(self.namespace, body)
        self._follower = Background(self._follow_new_pods).start()
        self.wait_ready(self.shape.pods)
        return self

    def apply_policy(self, spec: dict[str, Any]) -> None:
        """Create or replace the "orders" policy, then wait until the webhook decides by it."""
        put_policy(
            self.api,
            self.namespace,
            POLICY,
            {"sidecar": {"bootstrapServers": self.bootstrap}, **spec},
        )
        probe = opted_in_pod(SAMPLE_APP_IMAGE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pod = self.core.create_namespaced_pod(self.namespace, probe, dry_run="All")
            if "kafka-sidecar.io/status" in (pod.metadata.annotations or {}):
                return
            time.sleep(0.5)
        raise TimeoutError(f"the webhook never decided by policy {self.namespace}/{POLICY}")

    def pods(self) -> list[Any]:
        """The Deployment's pods that are not being deleted."""
        items = self.core.list_namespaced_pod(self.namespace, label_selector="app=orders").items
        return [p for p in items if p.metadata.deletion_timestamp is None]

    def wait_ready(self, count: int, timeout: float = 240) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.pods()
            ready = [
                p
                for p in pods
                if p.status.phase == "Running"
                and p.status.container_statuses
                and all(c.ready for c in p.status.container_statuses)
            ]
            if len(ready) == count == len(pods):
                return ready
            time.sleep(1)
        raise TimeoutError(f"{count} ready pods of the fleet in {self.namespace}")

    def _follow_new_pods(self, stopping: threading.Event) -> None:
        """Follow each pod's app from when it starts: its report outlives the pod only here.

        A follower that ended while its app still runs (kube-apiserver restarted under it) is
        replaced by one that reads the log again from the start."""
        while not stopping.is_set():
            with contextlib.suppress(Exception):  # the API server may be restarting
                items = self.core.list_namespaced_pod(self.namespace, label_selector="app=orders")
                for pod in items.items:
                    name = pod.metadata.name
                    self.seen.add(name)
                    for status in pod.status.container_statuses or []:
                        if status.name == "app":
                            self.app_restarts = max(self.app_restarts, status.restart_count)
                    followed = self.logs.get(name)
                    ended = followed is not None and not followed.following()
                    if (followed is None and app_started(pod)) or (ended and app_running(pod)):
                        if followed is not None:
                            followed.stop()
                        argv = self.node.kubectl_argv()
                        self.logs[name] = FollowedLog(argv, self.namespace, name).start()
            stopping.wait(0.5)

    def stop(self) -> Delivery:
        """Delete the Deployment (apps drain first, then sidecars), read every report, read the
        topic to its end and judge the delivery."""
        body = k8s.V1DeleteOptions(propagation_policy="Foreground")
        k8s.AppsV1Api(self.api).delete_namespaced_deployment("orders", self.namespace, body=body)
        deadline = time.monotonic() + 180
        while self.core.list_namespaced_pod(self.namespace).items:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fleet's pods in {self.namespace} never went away")
            time.sleep(1)
        if self._follower is not None:
            self._follower.stop()
        reports: list[dict[str, Any]] = []
        for name in sorted(self.seen):
            log = self.logs.get(name)
            mine = log.reports(timeout=30) if log is not None else []
            if len(mine) != self.shape.workers:
                self.unreported.append(name)
            reports += mine
        self.modes = {str(r.get("mode")) for r in reports}
        return verify(reports, read_topic(self.bootstrap, self.topic))

    def close(self) -> None:
        """Stop following and delete the namespace (also after a failure)."""
        if self._follower is not None:
            self._follower.stop()
        for log in list(self.logs.values()):
            log.stop()
        with contextlib.suppress(k8s.ApiException):
            self.core.delete_namespace(self.namespace)


def put_policy(api: k8s.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Create the policy, or replace the spec of the one that exists."""
    custom = k8s.CustomObjectsApi(api)
    body = {
        "apiVersion": "kafka-sidecar.io/v1alpha1",
        "kind": "KafkaSidecarPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    args = ("kafka-sidecar.io", "v1alpha1", namespace, "kafkasidecarpolicies")
    try:
        custom.create_namespaced_custom_object(*args, body)
    except k8s.ApiException as error:
        if error.status != 409:
            raise
        custom.patch_namespaced_custom_object(*args, name, {"spec": spec})


def read_topic(bootstrap: str, topic: str, timeout: float = 120) -> Iterator[bytes | None]:
    """Every record value of ``topic``, up to the end offsets read at the start: each partition
    in order, none missed because a timer ran out first."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        ends: dict[int, int] = {}
        for partition in metadata.topics[topic].partitions:
            ends[partition] = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30
            )[1]
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {positions} of {ends}")
            for message in consumer.consume(1000, timeout=1):
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue
                # Each offset once: a consumer re-fetching after a leadership move (the brokers
                # rebalance leaders every few seconds) must not show the checker a duplicate
                # the log does not hold.
                if offset >= positions[partition]:
                    positions[partition] = offset + 1
                    yield message.value()
    finally:
        consumer.close()
