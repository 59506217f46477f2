"""``make demo``: the product on the local environment, rolled out 0 → 50 → 100 %.

Starts three Kafka brokers, etcd + kube-apiserver, the operator, and a fleet of sample-app pods
(multi-process producers) run by the local pod runner. At each rollout step the pods are
recreated (as a rolling restart would) and measured: broker connections, events/s, delivery
success and fallback ratios, and ``kubectl get ksp``. Ends with a summary and a PNG chart in
demo-output/. ``KEEP=1`` leaves everything running.
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

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kafka_sidecar_localenv.__main__ import down, up
from kafka_sidecar_localenv.connections import broker_connections, with_descendants
from kafka_sidecar_localenv.operator import OperatorProcess
from kafka_sidecar_localenv.podrunner import LocalPod
from kafka_sidecar_localenv.sample_app import sample_app_pod
from kafka_sidecar_operator.fallback import client_totals

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".localenv"
OUT = ROOT / "demo-output"
NAMESPACE, TOPIC, PODS, WORKERS, RATE = "demo", "demo-events", 4, 4, 150
STEPS = (0, 50, 100)
MEASURE_SECONDS = 12


def say(text: str) -> None:
    print(text, flush=True)


def kubectl(state: dict[str, Any], *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [
            state["kubernetes"]["kubectl"],
            f"--kubeconfig={state['kubernetes']['kubeconfig']}",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


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


def sidecar_fallback(pods: list[LocalPod]) -> tuple[float, float]:
    """Summed client attempts and fallbacks the pods' sidecars expose."""
    attempts = fallback = 0.0
    for pod in pods:
        for sidecar in pod.sidecars:
            port = sidecar.spec["ports"][0]["containerPort"]
            try:
                with urllib.request.urlopen(f"http://{pod.ip}:{port}/metrics", timeout=2) as r:
                    pod_attempts, pod_fallback = client_totals(r.read().decode())
            except OSError:
                continue
            attempts += pod_attempts
            fallback += pod_fallback
    return attempts, fallback


def run_step(
    step: int,
    state: dict[str, Any],
    core: k8s.CoreV1Api,
    custom: k8s.CustomObjectsApi,
    ports: list[int],
    workdir: Path,
) -> dict[str, Any]:
    bootstrap = state["kafka"]["bootstrap_servers"]
    custom.patch_namespaced_custom_object(
        "kafka-sidecar.io",
        "v1alpha1",
        NAMESPACE,
        "kafkasidecarpolicies",
        "orders",
        {"spec": {"rollout": {"percentage": step}}},
    )
    time.sleep(2)  # the policy reaches the webhook's index
    names = [f"orders-{step}-{i}" for i in range(PODS)]
    for name in names:
        body: Any = sample_app_pod(f"orders-s{step}", bootstrap, TOPIC, WORKERS, RATE, name=name)
        core.create_namespaced_pod(NAMESPACE, body)

    def write_status(namespace: str, name: str, status: dict[str, Any]) -> None:
        core.patch_namespaced_pod_status(name, namespace, {"status": status})

    pods = [
        LocalPod(
            core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, NAMESPACE)),
            workdir / f"step{step}" / str(name),
            write_status,
        ).start()
        for name in names
    ]
    injected = sum(bool(p.sidecars) for p in pods)
    time.sleep(3)
    start_offsets, started = end_offsets(bootstrap), time.monotonic()
    peak = 0
    say(f"  step {step:>3}%: {injected}/{PODS} pods injected; measuring {MEASURE_SECONDS}s")
    while time.monotonic() - started < MEASURE_SECONDS:
        time.sleep(2)
        pids = with_descendants([pid for p in pods for pid in p.pids()])
        connections = broker_connections(pids, ports)
        peak = max(peak, connections)
        rate = (end_offsets(bootstrap) - start_offsets) / (time.monotonic() - started)
        say(
            f"    {time.monotonic() - started:5.1f}s  broker connections {connections:3d}  "
            f"events/s {rate:8.0f}"
        )
    rate = (end_offsets(bootstrap) - start_offsets) / (time.monotonic() - started)
    attempts, fallback = sidecar_fallback(pods)
    ksp = kubectl(state, "get", "ksp", "-n", NAMESPACE).splitlines()[1]
    for pod in pods:
        pod.stop()
    reports = [
        json.loads(line)
        for p in pods
        for line in (p.workdir / "logs" / "app.log").read_text().splitlines()
        if line.startswith("{")
    ]
    produced = sum(r["produced"] for r in reports)
    acked = sum(r["acked"] for r in reports)
    for name in names:
        core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
    return {
        "step": step,
        "injected_pods": injected,
        "pods": PODS,
        "processes": PODS * (WORKERS + 1),
        "broker_connections": peak,
        "events_per_second": rate,
        "delivery_success": acked / produced if produced else 0,
        "fallback_ratio": fallback / attempts if attempts else None,
        "ksp": ksp,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| rollout | injected pods | broker connections | events/s | delivered | fallback "
        "| kubectl get ksp |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fallback = "-" if r["fallback_ratio"] is None else f"{r['fallback_ratio']:.2%}"
        lines.append(
            f"| {r['step']}% | {r['injected_pods']}/{r['pods']} | "
            f"{r['broker_connections']} | {r['events_per_second']:.0f} | "
            f"{r['delivery_success']:.2%} | {fallback} | `{' '.join(r['ksp'].split())}` |"
        )
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]]) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['step']}%" for r in rows]
    left.bar(labels, [r["broker_connections"] for r in rows], color="#c44")
    left.set_title("broker connections (peak)")
    right.bar(labels, [r["events_per_second"] for r in rows], color="#48c")
    right.set_title("events/s")
    figure.suptitle(f"kafka-sidecar rollout: {PODS} pods x {WORKERS} worker processes")
    figure.tight_layout()
    path = OUT / "rollout.png"
    figure.savefig(path, dpi=100)
    return path


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    OUT.mkdir(exist_ok=True)
    say("== Starting the local environment: 3 Kafka brokers, etcd, kube-apiserver")
    if up(STATE, brokers=3) != 0:
        return 1
    state = json.loads((STATE / "state.json").read_text())
    operator = OperatorProcess(
        Path(state["kubernetes"]["kubeconfig"]),
        STATE / "operator",
        env={"KAFKA_SIDECAR_OPERATOR_FALLBACK_INTERVAL": "2"},
    )
    rows: list[dict[str, Any]] = []
    try:
        say("== Installing the CRD and starting the operator (webhook on 127.0.0.1)")
        kubectl(state, "apply", "-k", str(ROOT / "crds"))
        kubectl(
            state,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/kafkasidecarpolicies.kafka-sidecar.io",
        )
        operator.start()
        api = k8s_config.new_client_from_config(config_file=state["kubernetes"]["kubeconfig"])  # type: ignore[no-untyped-call]
        core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        kubectl(
            state,
            "apply",
            "-f",
            "-",
            stdin=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": NAMESPACE,
                        "labels": {"kafka-sidecar.io/injection": "enabled"},
                    },
                }
            ),
        )
        bootstrap = state["kafka"]["bootstrap_servers"]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=3)])[
            TOPIC
        ].result(30)
        policy: Any = {
            "apiVersion": "kafka-sidecar.io/v1alpha1",
            "kind": "KafkaSidecarPolicy",
            "metadata": {"name": "orders"},
            "spec": {
                "selector": {"matchLabels": {"app": "orders"}},
                "rollout": {"percentage": 0, "granularity": "pod"},
                "sidecar": {"bootstrapServers": bootstrap},
            },
        }
        custom.create_namespaced_custom_object(
            "kafka-sidecar.io", "v1alpha1", NAMESPACE, "kafkasidecarpolicies", policy
        )
        ports = [int(b["address"].rsplit(":", 1)[1]) for b in state["kafka"]["brokers"]]
        say(f"== Fleet: {PODS} pods x {WORKERS} forked producer processes, {RATE} events/s each")
        for step in STEPS:
            rows.append(run_step(step, state, core, custom, ports, STATE / "pods"))
            say(table(rows[-1:]).splitlines()[-1])
        summary = table(rows)
        (OUT / "summary.md").write_text(summary + "\n")
        (OUT / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        path = chart(rows)
        say("\n== Summary\n" + summary)
        before, after = rows[0]["broker_connections"], rows[-1]["broker_connections"]
        if after:
            say(
                f"\nBroker connections {before} -> {after} ({before / after:.1f}x fewer); "
                f"chart: {path.relative_to(ROOT)}"
            )
    finally:
        if keep:
            state_path = STATE / "state.json"
            recorded = json.loads(state_path.read_text())
            recorded["pids"].insert(0, operator.pid)  # so make localenv-down stops it too
            state_path.write_text(json.dumps(recorded, indent=2) + "\n")
            say(
                f"\nKEEP=1: everything is still running. Look at it with:\n"
                f"  eval $(make -s localenv-env)\n  kubectl get ksp -n {NAMESPACE}\n"
                f"  kubectl describe ksp orders -n {NAMESPACE}\n"
                f"Stop it with: make localenv-down (operator pid {operator.pid})"
            )
        else:
            operator.stop()
            down(STATE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
