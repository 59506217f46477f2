"""Helpers tests share: unique names, topics made on the real cluster, reading a topic back."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, generate_latest

from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.kube import ControlPlane


def unique_name(prefix: str) -> str:
    """A DNS-1123 name unique to this test run."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(cluster: KafkaCluster, partitions: int = 1, replication: int = 1) -> str:
    """A fresh topic, created and confirmed before the test produces to it."""
    name = unique_name("t")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication)]
    )
    futures[name].result(timeout=30)
    return name


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Message]:
    """Read ``topic`` from the beginning: at least ``expected`` messages (unless time runs out),
    then on until nothing more arrives for a second, so duplicates cannot hide missing events."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            messages.extend(m for m in batch if m.error() is None)
            if not batch and len(messages) >= expected:
                break
    finally:
        consumer.close()
    return messages


# -- Kubernetes ---------------------------------------------------------------------------


def kubectl(
    plane: ControlPlane, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(plane.kubectl), f"--kubeconfig={plane.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def policy_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kafka-sidecar.io/v1alpha1",
        "kind": "KafkaSidecarPolicy",
        "metadata": {"name": name},
        "spec": {"sidecar": {"bootstrapServers": "127.0.0.1:9092"}, **spec},
    }


def create_policy(api: k8s.ApiClient, namespace: str, name: str = "p", **spec: Any) -> None:
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "kafka-sidecar.io", "v1alpha1", namespace, "kafkasidecarpolicies", policy_body(name, **spec)
    )


def pod_body(
    name: str,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": labels or {"app": "web"},
            "annotations": annotations
            if annotations is not None
            else {"kafka-sidecar.io/inject": "true"},
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def status_of(pod: Any) -> dict[str, Any]:
    raw = (pod.metadata.annotations or {}).get("kafka-sidecar.io/status")
    return json.loads(raw) if raw else {}


def wait_for(check: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def wait_policy_active(
    core: k8s.CoreV1Api, namespace: str, expect: str | None = "injected"
) -> None:
    """The policy reached the webhook's index once a dry-run pod gets the expected decision
    (``None``: any decision made by a policy)."""
    probe = pod_body("probe")

    def decided() -> bool:
        status = status_of(core.create_namespaced_pod(namespace, probe, dry_run="All"))
        return status.get("reason") == expect if expect else bool(status.get("policy"))

    wait_for(decided, what=f"dry-run decision {expect or 'by a policy'}")


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> ThreadingHTTPServer:
    """A sidecar-like /metrics endpoint on ``host:port`` exporting ``registry`` (the sidecar's
    real collectors), served on a thread until ``stop_serving``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_serving(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
