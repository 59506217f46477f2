"""``make demo``: the product on a real single-node cluster, rolled out 0 → 50 → 100 %.

Starts three Kafka brokers and the local Kubernetes node (kubelet, containerd, the images built
from this repository's Dockerfiles), installs the operator the way the README says (CRDs, then
``manifests/selfsigned``), and runs a Deployment of sample-app pods (multi-process producers, as a
non-root UID). Each rollout step is what a user does: ``kubectl apply`` of the policy's new
percentage, then ``kubectl rollout restart``. Every step offers the same load (a rate the direct
step reaches on a 2-core machine) and is measured: broker connections, the brokers' Produce
requests/s (their own metrics), the pods' CPU per event (their cgroups), events/s, delivery
success and fallback ratios, and ``kubectl get ksp``. Ends with a summary and a PNG chart
in demo-output/. ``KEEP=1`` leaves everything running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kafka_sidecar_localenv.__main__ import down, up
from kafka_sidecar_localenv.broker_metrics import read_all
from kafka_sidecar_localenv.connections import (
    broker_connections,
    cgroup_cpu_seconds,
    container_pids,
)
from kafka_sidecar_localenv.images import SAMPLE_APP_IMAGE
from kafka_sidecar_localenv.operator_install import install_operator
from kafka_sidecar_localenv.podlogs import FollowedLog
from kafka_sidecar_localenv.sample_app import sample_app_deployment
from kafka_sidecar_operator.fallback import client_totals

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".localenv"
OUT = ROOT / "demo-output"
# 4 pods x 4 processes x 40 events/s: the rate all three steps sustain on 2 shared cores. At 150
# events/s each, direct apps reached about 550 of 2,400 events/s: 16 producers each sending
# Produce requests of one or two records kept the brokers and the apps CPU-bound, and the
# sample app lowers its offer when it falls behind.
NAMESPACE, TOPIC, PODS, WORKERS, RATE = "demo", "demo-events", 4, 4, 40
STEPS = (0, 50, 100)
MEASURE_SECONDS = 12


def say(text: str) -> None:
    print(text, flush=True)


class Cluster:
    """kubectl against the local environment, from its state file."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        kube = state["kubernetes"]
        self.argv = [kube["kubectl"], f"--kubeconfig={kube['kubeconfig']}"]

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        proc = subprocess.run(
            [*self.argv, *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, body: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(body))

    def pods(self) -> list[dict[str, Any]]:
        """The Deployment's running pods (not those being deleted)."""
        items = json.loads(
            self.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=orders", "-o", "json")
        )
        return [p for p in items["items"] if "deletionTimestamp" not in p["metadata"]]


def end_offsets(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-offsets"})
    try:
        metadata = consumer.list_topics(TOPIC, timeout=10)
        total = 0
        for partition in metadata.topics[TOPIC].partitions:
            total += consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)[1]
        return total
    finally:
        consumer.close()


def pod_pids(pod: dict[str, Any]) -> list[int]:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get(
        "containerStatuses", []
    )
    return [
        pid
        for status in statuses
        if status.get("containerID")
        for pid in container_pids(status["containerID"].split("://", 1)[1])
    ]


def injected(pod: dict[str, Any]) -> bool:
    return any(c["name"] == "kafka-sidecar" for c in pod["spec"].get("initContainers", []))


def sidecar_fallback(pods: list[dict[str, Any]]) -> tuple[float, float]:
    """Summed client attempts and fallbacks the pods' sidecars expose on their metrics port."""
    attempts = fallback = 0.0
    for pod in filter(injected, pods):
        try:
            url = f"http://{pod['status']['podIP']}:9464/metrics"
            with urllib.request.urlopen(url, timeout=2) as response:
                pod_attempts, pod_fallback = client_totals(response.read().decode())
        except OSError:
            continue
        attempts += pod_attempts
        fallback += pod_fallback
    return attempts, fallback


def follow(cluster: Cluster, pods: list[dict[str, Any]]) -> list[FollowedLog]:
    """Follow each app's log: its delivery report is printed when the pod is stopped."""
    return [FollowedLog(cluster.argv, NAMESPACE, p["metadata"]["name"]).start() for p in pods]


def delivery(logs: list[FollowedLog]) -> float:
    reports = [r for log in logs for r in log.reports()]
    produced = sum(r["produced"] for r in reports)
    return sum(r["acked"] for r in reports) / produced if produced else 0.0


def policy(bootstrap: str, percentage: int) -> dict[str, Any]:
    return {
        "apiVersion": "kafka-sidecar.io/v1alpha1",
        "kind": "KafkaSidecarPolicy",
        "metadata": {"name": "orders", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "orders"}},
            "rollout": {"percentage": percentage, "granularity": "pod"},
            "sidecar": {"bootstrapServers": bootstrap},
        },
    }


def pods_cpu_seconds(pods: list[dict[str, Any]]) -> float:
    """CPU of the pods' cgroups: every container of each pod, sidecar included."""
    total = 0.0
    for pod in pods:
        pids = pod_pids(pod)
        if pids:
            total += cgroup_cpu_seconds(pids[0], levels_up=1)
    return total


def run_step(
    step: int, cluster: Cluster, ports: list[int], logs: list[FollowedLog]
) -> dict[str, Any]:
    """Apply the new percentage, restart the Deployment, measure; returns the step's row and
    leaves the new pods' logs followed (their reports come when the next step replaces them)."""
    bootstrap = cluster.state["kafka"]["bootstrap_servers"]
    cluster.apply(policy(bootstrap, step))
    time.sleep(3)  # both operator replicas' webhooks see the new percentage
    cluster.kubectl("rollout", "restart", "deployment/orders", "-n", NAMESPACE)
    cluster.kubectl("rollout", "status", "deployment/orders", "-n", NAMESPACE, "--timeout=300s")
    previous = delivery(logs)
    pods = cluster.pods()
    logs[:] = follow(cluster, pods)
    count = sum(map(injected, pods))
    time.sleep(3)
    metrics_ports = [urlsplit(b["metrics"]).port or 0 for b in cluster.state["kafka"]["brokers"]]
    brokers0, cpu0 = read_all(metrics_ports), pods_cpu_seconds(pods)
    start_offsets, started = end_offsets(bootstrap), time.monotonic()
    peak = 0
    say(f"  step {step:>3}%: {count}/{len(pods)} pods injected; measuring {MEASURE_SECONDS}s")
    while time.monotonic() - started < MEASURE_SECONDS:
        time.sleep(2)
        connections = broker_connections([pid for p in pods for pid in pod_pids(p)], ports)
        peak = max(peak, connections)
        rate = (end_offsets(bootstrap) - start_offsets) / (time.monotonic() - started)
        say(
            f"    {time.monotonic() - started:5.1f}s  broker connections {connections:3d}  "
            f"events/s {rate:8.0f}"
        )
    events, elapsed = end_offsets(bootstrap) - start_offsets, time.monotonic() - started
    cpu, brokers = pods_cpu_seconds(pods) - cpu0, read_all(metrics_ports)
    attempts, fallback = sidecar_fallback(pods)
    if step == STEPS[-1]:
        (OUT / "pods.txt").write_text(cluster.kubectl("get", "pods", "-A", "-o", "wide"))
    return {
        "step": step,
        "injected_pods": count,
        "pods": len(pods),
        "processes": len(pods) * (WORKERS + 1),
        "broker_connections": peak,
        "offered_per_second": PODS * WORKERS * RATE,
        "events_per_second": events / elapsed,
        "produce_requests_per_second": (brokers.produce_requests - brokers0.produce_requests)
        / elapsed,
        "pod_cpu_us_per_event": cpu / events * 1e6 if events else 0.0,
        "previous_step_delivery": previous,
        "fallback_ratio": fallback / attempts if attempts else None,
        "ksp": cluster.kubectl("get", "ksp", "-n", NAMESPACE).splitlines()[1],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| rollout | injected pods | broker connections | broker Produce requests/s "
        "| pod CPU µs per event | events/s (offered) | delivered | fallback | kubectl get ksp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fallback = "-" if r["fallback_ratio"] is None else f"{r['fallback_ratio']:.2%}"
        lines.append(
            f"| {r['step']}% | {r['injected_pods']}/{r['pods']} | "
            f"{r['broker_connections']} | {r['produce_requests_per_second']:.0f} | "
            f"{r['pod_cpu_us_per_event']:.0f} | "
            f"{r['events_per_second']:.0f} ({r['offered_per_second']}) | "
            f"{r['delivery_success']:.2%} | {fallback} | `{' '.join(r['ksp'].split())}` |"
        )
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]]) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(1, 4, figsize=(16, 4))
    labels = [f"{r['step']}%" for r in rows]
    panels = (
        ("broker_connections", "broker connections (peak)", "#c44"),
        ("produce_requests_per_second", "broker Produce requests/s", "#c84"),
        ("pod_cpu_us_per_event", "pod CPU µs per event (apps + sidecar)", "#4a4"),
        ("events_per_second", "events/s (line: offered)", "#48c"),
    )
    for axis, (key, title, color) in zip(axes, panels, strict=True):
        axis.bar(labels, [r[key] for r in rows], color=color)
        axis.set_title(title)
    axes[-1].axhline(PODS * WORKERS * RATE, color="#222", linestyle="--")
    figure.suptitle(
        f"kafka-sidecar rollout at equal offered load: {PODS} pods x {WORKERS} processes x "
        f"{RATE} events/s"
    )
    figure.tight_layout()
    path = OUT / "rollout.png"
    figure.savefig(path, dpi=100)
    return path


def install(cluster: Cluster) -> None:
    """The README's install path, then the demo's namespace, topic, policy and Deployment."""
    say("== Installing the operator: kubectl apply -k manifests/crd, then manifests/selfsigned")
    install_operator(cluster.argv)
    labels = {
        "kafka-sidecar.io/injection": "enabled",
        "pod-security.kubernetes.io/enforce": "restricted",
    }
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels}}
    )
    bootstrap = cluster.state["kafka"]["bootstrap_servers"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=3)])[TOPIC].result(30)
    cluster.apply(policy(bootstrap, STEPS[0]))
    deployment = sample_app_deployment(
        "orders", SAMPLE_APP_IMAGE, bootstrap, TOPIC, WORKERS, RATE, replicas=PODS
    )
    deployment["metadata"]["namespace"] = NAMESPACE
    # The whole new set starts before the old one stops: quicker steps, same evidence.
    deployment["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0},
    }
    cluster.apply(deployment)
    cluster.kubectl("rollout", "status", "deployment/orders", "-n", NAMESPACE, "--timeout=300s")


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    OUT.mkdir(exist_ok=True)
    say("== Starting the local environment: 3 Kafka brokers and a real Kubernetes node")
    if up(STATE, brokers=3, node=True) != 0:
        return 1
    cluster = Cluster(json.loads((STATE / "state.json").read_text()))
    rows: list[dict[str, Any]] = []
    try:
        install(cluster)
        ports = [int(b["address"].rsplit(":", 1)[1]) for b in cluster.state["kafka"]["brokers"]]
        say(f"== Fleet: {PODS} pods x {WORKERS} forked producer processes, {RATE} events/s each")
        logs = follow(cluster, cluster.pods())
        for step in STEPS:
            rows.append(run_step(step, cluster, ports, logs))
        cluster.kubectl("scale", "deployment/orders", "-n", NAMESPACE, "--replicas=0")
        finals = [r["previous_step_delivery"] for r in rows[1:]] + [delivery(logs)]
        for row, delivered in zip(rows, finals, strict=True):
            row["delivery_success"] = delivered
        summary = table(rows)
        (OUT / "summary.md").write_text(summary + "\n")
        (OUT / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        path = chart(rows)
        say("\n== Summary\n" + summary)
        before, after = rows[0]["broker_connections"], rows[-1]["broker_connections"]
        if after:
            say(
                f"\nBroker connections {before} -> {after} ({before / after:.1f}x fewer); "
                f"chart: {path.relative_to(ROOT)}; pods at 100%: demo-output/pods.txt"
            )
    finally:
        if keep:
            say(
                f"\nKEEP=1: everything is still running. Look at it with:\n"
                f"  eval $(make -s localenv-env)\n  kubectl get ksp -n {NAMESPACE}\n"
                f"  kubectl get pods -A -o wide\n"
                f"Stop it with: make localenv-down"
            )
        else:
            down(STATE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
