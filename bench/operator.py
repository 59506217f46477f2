"""Benchmark: the injection webhook's latency as kube-apiserver measures it, and operator cost.

Creates pods through the real API server with the operator's webhook registered, spread over
``--policies`` policies whose status the operator keeps recomputing while the pods arrive (status
churn), then reads ``apiserver_admission_webhook_admission_duration_seconds`` (p50/p99 from its
buckets), the operator's RSS with those pods indexed and the CPU it used (its process and the
webhook's child process together). Writes
``results/operator.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from kafka_sidecar_localenv.versions import default_layout

METRIC = "apiserver_admission_webhook_admission_duration_seconds_bucket"
CRD = Path(__file__).parent.parent / "crds" / "kafkasidecarpolicies.kafka-sidecar.io.yaml"


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus histogram_quantile over cumulative (le, count) buckets."""
    total = buckets[-1][1]
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return previous_le
            width = count - previous_count
            return previous_le + (le - previous_le) * (
                (rank - previous_count) / width if width else 0
            )
        previous_le, previous_count = le, count
    return previous_le


def webhook_buckets(plane: ControlPlane) -> list[tuple[float, float]]:
    raw = subprocess.run(
        [str(plane.kubectl), f"--kubeconfig={plane.kubeconfig}", "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    buckets: dict[float, float] = {}
    for line in raw.splitlines():
        if (
            line.startswith(METRIC)
            and 'name="inject-sidecar.kafka-sidecar.io"' in line
            and 'operation="CREATE"' in line
        ):
            le = re.search(r'le="([^"]+)"', line)
            assert le is not None
            bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return sorted(buckets.items())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The process's children (the webhook process), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def family_cpu_seconds(pid: int) -> float:
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def family_rss_mib(pid: int) -> float:
    return rss_mib(pid) + sum(rss_mib(child) for child in children(pid))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kafka-sidecar-bench-op-") as tmp:
        plane = ControlPlane(default_layout(), Path(tmp) / "kube")
        operator = OperatorProcess(plane.kubeconfig, Path(tmp) / "operator")
        try:
            plane.start()
            subprocess.run(
                [str(plane.kubectl), f"--kubeconfig={plane.kubeconfig}", "apply", "-f", str(CRD)],
                check=True,
                capture_output=True,
            )
            operator.start()
            api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(plane.kubeconfig)
            )
            core = k8s.CoreV1Api(api)
            namespace: Any = {
                "metadata": {"name": "bench", "labels": {"kafka-sidecar.io/injection": "enabled"}}
            }
            core.create_namespace(namespace)
            for index in range(args.policies):
                policy: Any = {
                    "apiVersion": "kafka-sidecar.io/v1alpha1",
                    "kind": "KafkaSidecarPolicy",
                    "metadata": {"name": f"bench-{index}"},
                    "spec": {
                        "selector": {"matchLabels": {"app": f"web-{index}"}},
                        "rollout": {"percentage": 50, "granularity": "pod"},
                        "sidecar": {"bootstrapServers": "127.0.0.1:9092"},
                    },
                }
                k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                    "kafka-sidecar.io", "v1alpha1", "bench", "kafkasidecarpolicies", policy
                )
            rss_before = family_rss_mib(operator.pid)
            time.sleep(2 + args.policies / 50)  # the policies reach the webhook's index
            cpu_before = family_cpu_seconds(operator.pid)
            webhook_cpu_before = sum(cpu_seconds(c) for c in children(operator.pid))
            baseline = webhook_buckets(plane)
            started = time.monotonic()
            injected = 0
            for number in range(args.pods):
                pod: Any = {
                    "metadata": {
                        "generateName": "web-",
                        "labels": {"app": f"web-{number % args.policies}"},
                        "annotations": {"kafka-sidecar.io/inject": "true"},
                    },
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                }
                created = core.create_namespaced_pod("bench", pod)
                injected += bool(created.spec and created.spec.init_containers)
            seconds = time.monotonic() - started
            time.sleep(3)  # the pod index catches up
            after = webhook_buckets(plane)
            before = dict(baseline)
            buckets = [(le, count - before.get(le, 0.0)) for le, count in after]
            result = {
                "pods": args.pods,
                "policies": args.policies,
                "injected": injected,
                "creations_per_second": args.pods / seconds,
                "webhook_p50_ms": quantile(buckets, 0.5) * 1000,
                "webhook_p99_ms": quantile(buckets, 0.99) * 1000,
                "webhook_calls": buckets[-1][1] if buckets else 0,
                # Cumulative counts per upper bound (the API server's buckets are coarse).
                "webhook_buckets_seconds": [[str(le), count] for le, count in buckets],
                "operator_rss_mib_before": rss_before,
                "operator_rss_mib_with_pods_indexed": family_rss_mib(operator.pid),
                "webhook_process_rss_mib": sum(rss_mib(c) for c in children(operator.pid)),
                "operator_cpu_seconds": family_cpu_seconds(operator.pid) - cpu_before,
                "webhook_process_cpu_seconds": sum(cpu_seconds(c) for c in children(operator.pid))
                - webhook_cpu_before,
                "seconds": seconds,
            }
        finally:
            operator.stop()
            plane.stop()
    (args.out / "operator.json").write_text(json.dumps(result, indent=2) + "\n")
    report = "\n".join(
        [
            "# Operator benchmark",
            "",
            f"{result['pods']} pod creations through kube-apiserver with the webhook registered, "
            f"over {result['policies']} policies whose status is recomputed while they arrive "
            f"({result['injected']} injected at 50%).",
            "",
            "| webhook p50 (apiserver) | webhook p99 (apiserver) | pod creations/s | "
            "operator RSS before | operator RSS with pods indexed | operator CPU during |",
            "|---|---|---|---|---|---|",
            f"| {result['webhook_p50_ms']:.1f} ms | {result['webhook_p99_ms']:.1f} ms | "
            f"{result['creations_per_second']:.0f} | {result['operator_rss_mib_before']:.0f} MiB | "
            f"{result['operator_rss_mib_with_pods_indexed']:.0f} MiB | "
            f"{result['operator_cpu_seconds']:.1f} s in {result['seconds']:.0f} s |",
            "",
            "RSS and CPU are the operator's process and its webhook process together; the webhook "
            f"process alone: {result['webhook_process_rss_mib']:.0f} MiB, "
            f"{result['webhook_process_cpu_seconds']:.1f} s CPU.",
            "",
        ]
    )
    (args.out / "operator.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
