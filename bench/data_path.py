"""Benchmark: events/s, produce() cost and broker connections, direct vs through the sidecar.

Runs every scenario side by side in one run on a three-broker local cluster (interleaving the
modes, repeated), writes ``results/data-path.json``, ``results/data-path.md`` and a PNG chart.
``--smoke`` is the short run CI does so the benchmark cannot rot.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kafka_sidecar_localenv.connections import broker_connections
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess
from kafka_sidecar_localenv.versions import default_layout

# The sidecar's defaults, given to direct producers too: the comparison is of paths, not settings.
PRODUCER_SETTINGS = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 5,
}
PARTITIONS = 6


def worker(
    mode: str,
    address: str,
    bootstrap: str,
    topic: str,
    count: int,
    size: int,
    start: Any,
    results: Any,
) -> None:
    """One app process: produce ``count`` events as fast as the producer takes them, flush."""
    os.environ["KAFKA_SIDECAR_MODE"] = mode
    os.environ["KAFKA_SIDECAR_ADDRESS"] = address
    from kafka_sidecar_client import Producer  # noqa: PLC0415 - after the env is set

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    value = os.urandom(size // 2).hex().encode()[:size]
    failures = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failures
        failures += err is not None

    start.wait()
    began = time.perf_counter()
    in_produce = 0.0
    clock = time.perf_counter
    for n in range(count):
        while True:
            t0 = clock()
            try:
                producer.produce(topic, value, str(n % 64).encode(), on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.005)
                continue
            in_produce += clock() - t0
            break
        if n % 1000 == 0:
            producer.poll(0)
    left = producer.flush(300)
    results.put(
        {
            "seconds": time.perf_counter() - began,
            "produce_us": in_produce / count * 1e6,
            "left": left,
            "failures": failures,
        }
    )


def run_scenario(
    mode: str, processes: int, size: int, total: int, cluster: KafkaCluster, sidecar: SidecarProcess
) -> dict[str, Any]:
    topic = f"bench-{mode}-{processes}-{size}-{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
        topic
    ].result(30)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    per_process = total // processes
    workers = [
        context.Process(
            target=worker,
            args=(
                mode,
                sidecar.address,
                cluster.bootstrap_servers,
                topic,
                per_process,
                size,
                start,
                results,
            ),
        )
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    time.sleep(1.0 + 0.3 * processes)  # imports and producer set-up are not measured
    ports = [node.port for node in cluster.nodes]
    pids = [p.pid for p in workers if p.pid is not None]
    began = time.perf_counter()
    start.set()
    peak_clients = peak_sidecar = 0
    collected: list[dict[str, Any]] = []
    while len(collected) < processes:
        peak_clients = max(peak_clients, broker_connections(pids, ports))
        peak_sidecar = max(peak_sidecar, broker_connections([sidecar.pid], ports))
        while not results.empty():
            collected.append(results.get())
        time.sleep(0.05)
    seconds = time.perf_counter() - began
    for process in workers:
        process.join(30)
    assert all(r["left"] == 0 and r["failures"] == 0 for r in collected), collected
    return {
        "mode": mode,
        "processes": processes,
        "event_bytes": size,
        "events": per_process * processes,
        "seconds": seconds,
        "events_per_second": per_process * processes / seconds,
        "produce_us": statistics.median(r["produce_us"] for r in collected),
        "broker_connections": peak_clients + (peak_sidecar if mode == "sidecar" else 0),
        "client_broker_connections": peak_clients,
    }


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["mode"], row["processes"], row["event_bytes"]), []).append(row)
    summary = []
    for (mode, processes, size), runs in sorted(grouped.items()):
        summary.append(
            {
                "mode": mode,
                "processes": processes,
                "event_bytes": size,
                "runs": len(runs),
                **{
                    key: statistics.median(r[key] for r in runs)
                    for key in (
                        "events_per_second",
                        "produce_us",
                        "broker_connections",
                        "client_broker_connections",
                    )
                },
            }
        )
    return summary


def report(summary: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    index = {(r["mode"], r["processes"], r["event_bytes"]): r for r in summary}
    lines = [
        "# Data path benchmark",
        "",
        f"{meta['brokers']} brokers, {PARTITIONS} partitions, {meta['total']} events per scenario, "
        f"median of {meta['repeats']} interleaved run(s); {os.cpu_count()} CPU cores shared by "
        "brokers, sidecar and app processes.",
        "",
        "| processes | event size | direct events/s | sidecar events/s | sidecar/direct | "
        "produce() µs direct | produce() µs sidecar | broker conns direct | broker conns sidecar |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for processes, size in sorted({(r["processes"], r["event_bytes"]) for r in summary}):
        d, s = index.get(("direct", processes, size)), index.get(("sidecar", processes, size))
        if d is None or s is None:
            continue
        lines.append(
            f"| {processes} | {size} B | {d['events_per_second']:,.0f} | "
            f"{s['events_per_second']:,.0f} | "
            f"{s['events_per_second'] / d['events_per_second']:.2f} | "
            f"{d['produce_us']:.2f} | {s['produce_us']:.2f} | {d['broker_connections']:.0f} | "
            f"{s['broker_connections']:.0f} (apps: {s['client_broker_connections']:.0f}) |"
        )
    (out / "data-path.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib  # noqa: PLC0415 - only for the chart

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [
        f"{p}p/{b}B" for p, b in sorted({(r["processes"], r["event_bytes"]) for r in summary})
    ]
    for offset, mode in ((-0.2, "direct"), (0.2, "sidecar")):
        rows = [
            index[(mode, *key)]
            for key in sorted({(r["processes"], r["event_bytes"]) for r in summary})
        ]
        xs = [i + offset for i in range(len(rows))]
        left.bar(xs, [r["events_per_second"] for r in rows], width=0.4, label=mode)
        right.bar(xs, [r["broker_connections"] for r in rows], width=0.4, label=mode)
    for axis, title in ((left, "events/s"), (right, "broker connections (peak)")):
        axis.set_xticks(range(len(labels)), labels)
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "data-path.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    total, repeats = (8_000, 1) if args.smoke else (200_000, 3)
    sizes = (100,) if args.smoke else (100, 1024)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kafka-sidecar-bench-") as tmp:
        cluster = KafkaCluster(default_layout(), Path(tmp) / "kafka", size=3)
        sidecar = SidecarProcess("", Path(tmp) / "sidecar")
        try:
            cluster.start()
            sidecar.bootstrap_servers = cluster.bootstrap_servers
            sidecar.start()
            rows = []
            for repeat in range(repeats):
                for processes in (1, 8):
                    for size in sizes:
                        for mode in (
                            ("direct", "sidecar") if repeat % 2 == 0 else ("sidecar", "direct")
                        ):
                            row = run_scenario(mode, processes, size, total, cluster, sidecar)
                            print(json.dumps(row), file=sys.stderr, flush=True)
                            rows.append(row)
        finally:
            sidecar.stop()
            cluster.stop()
    summary = median_rows(rows)
    meta = {
        "brokers": 3,
        "total": total,
        "repeats": repeats,
        "smoke": args.smoke,
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (args.out / "data-path.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2) + "\n"
    )
    report(summary, meta, args.out)
    print((args.out / "data-path.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
