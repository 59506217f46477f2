"""Benchmark: what one pod pays per event at equal offered load, direct vs through its sidecar.

Open loop: every app process schedules its events at fixed intended times and latency runs from
the intended time, so a slow path shows up as latency instead of as a lower offered load.
Writes ``results/fleet.json``, ``results/fleet.md`` and a PNG; ``--smoke`` is CI's short run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.data_path import PARTITIONS, PRODUCER_SETTINGS
from bench.data_path import run_scenario as closed_loop
from kafka_sidecar_localenv.broker_metrics import BrokerSample, read_all
from kafka_sidecar_localenv.connections import broker_connections
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess, metric_sum
from kafka_sidecar_localenv.versions import default_layout

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BROKERS = 3
# EmitBatch calls the sidecar served: each costs both processes far more than an event in it.
CALLS = "kafka_sidecar_emit_batch_events_count"
# CI's floor for one sidecar's events/s over one direct process's (closed loop, 1 process, 100 B).
# Measured 0.19-0.33 by data_path.py and 0.24 by this smoke run on a shared 2-core machine; the
# floor catches a path that got several times dearer, not noise.
CAPACITY_FLOOR = 0.15


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, every thread included, from the kernel's accounting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def profile(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (every thread, without pausing it) into collapsed stacks."""
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [str(py_spy), "record", "--nonblocking", "--threads", "--format", "raw"]
    command += ["--duration", str(max(1, int(seconds))), "--pid", str(pid), "-o", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_frames(path: Path, limit: int = 15) -> list[tuple[str, float]]:
    """The functions most samples were in (self time), as shares of all samples."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    ranked = sorted(own.items(), key=lambda item: -item[1])[:limit]
    return [(frame, samples / total) for frame, samples in ranked]


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def worker(
    mode: str,
    address: str,
    bootstrap: str,
    topic: str,
    rate: float,
    seconds: float,
    size: int,
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    """One app process: events at ``rate``/s for ``seconds``, each at its intended time."""
    path, _, setting = mode.partition("+")  # "sidecar+NAME=VALUE": a client setting to try
    os.environ["KAFKA_SIDECAR_MODE"] = path
    if setting:
        name, _, setting_value = setting.partition("=")
        os.environ[name] = setting_value
    os.environ["KAFKA_SIDECAR_ADDRESS"] = address
    from kafka_sidecar_client import Producer  # noqa: PLC0415 - after the env is set

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    value = os.urandom(size // 2).hex().encode()[:size]
    clock = time.perf_counter
    latencies: list[float] = []
    failures = 0
    began = 0.0
    interval = 1 / rate

    def on_delivery(err: Any, msg: Any) -> None:
        # The key is the event's index, so its intended time needs no per-event closure.
        nonlocal failures
        if err is not None:
            failures += 1
            return
        latencies.append(clock() - began - int(msg.key()) * interval)

    # Warm-up (connections, metadata, the client's threads) is not measured.
    for _ in range(10):
        producer.produce(topic, value, b"0")
    producer.flush(60)
    ready.put(os.getpid())
    start.wait()
    cpu0 = time.process_time()
    began = clock()
    count = int(rate * seconds)
    produce_seconds = 0.0
    for n in range(count):
        due = n * interval
        while (wait := due - (clock() - began)) > 0:
            # confluent's poll() counts whole milliseconds: a shorter timeout would spin and bill
            # the direct path for a busy wait, so short waits sleep instead.
            if wait >= 0.002:
                producer.poll(wait - 0.001)
            else:
                time.sleep(wait)
        key = str(n).encode()
        while True:
            t0 = clock()
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.001)
                continue
            produce_seconds += clock() - t0
            break
        producer.poll(0)  # callbacks run when due, whatever the rate
    producer.poll(0)
    left = producer.flush(120)
    results.put(
        {
            "events": count,
            "cpu_seconds": time.process_time() - cpu0,
            "produce_us": produce_seconds / count * 1e6,
            "latencies": latencies,
            "failures": failures,
            "left": left,
        }
    )


def run_scenario(
    mode: str,
    processes: int,
    rate: float,
    seconds: float,
    size: int,
    cluster: KafkaCluster,
    sidecar: SidecarProcess,
    profiles: Path | None = None,
) -> dict[str, Any]:
    """P app processes at ``rate`` events/s in total; the pod is those plus the sidecar."""
    topic = f"fleet-{processes}-{time.monotonic_ns()}"
    through_sidecar = mode != "direct"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
        topic
    ].result(30)
    del admin  # its connections would count at the brokers
    metrics_ports = [node.metrics_port for node in cluster.nodes]
    brokers_idle = read_all(metrics_ports)
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    workers = [
        context.Process(
            target=worker,
            args=(
                mode,
                sidecar.address,
                cluster.bootstrap_servers,
                topic,
                rate / processes,
                seconds,
                size,
                ready,
                start,
                results,
            ),
        )
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    for _ in workers:
        ready.get(timeout=120)
    time.sleep(0.5)  # the warm-up's reports and connections settle
    ports = [node.port for node in cluster.nodes]
    pids = [p.pid for p in workers if p.pid is not None]
    sidecar_cpu0 = cpu_seconds(sidecar.pid)
    calls0 = metric_sum(sidecar.metrics(), CALLS)
    samplers = []
    if profiles is not None and through_sidecar:
        profiles.mkdir(parents=True, exist_ok=True)
        samplers = [
            profile(pid, seconds, profiles / f"{name}-{processes}p.txt")
            for pid, name in ((sidecar.pid, "sidecar"), (pids[0], "app"))
        ]
    brokers0 = read_all(metrics_ports)
    began = time.perf_counter()
    start.set()
    peak_apps = peak_sidecar = peak_rss = 0
    peak_brokers = BrokerSample()
    collected: list[dict[str, Any]] = []
    next_read = began
    while len(collected) < processes:
        peak_apps = max(peak_apps, broker_connections(pids, ports))
        peak_sidecar = max(peak_sidecar, broker_connections([sidecar.pid], ports))
        peak_rss = max(peak_rss, rss_bytes(sidecar.pid))
        if time.perf_counter() >= next_read:  # a bulk read costs the brokers a little CPU
            with contextlib.suppress(OSError):  # a broker too busy to answer: the next second
                peak_brokers = peak(peak_brokers, read_all(metrics_ports, timeout=1.0))
            next_read += 1.0
        while not results.empty():
            collected.append(results.get())
        time.sleep(0.1)
    wall = time.perf_counter() - began
    brokers = read_all(metrics_ports)
    sidecar_cpu = cpu_seconds(sidecar.pid) - sidecar_cpu0
    calls = metric_sum(sidecar.metrics(), CALLS) - calls0
    for process in workers:
        process.join(30)
    for sampler in samplers:
        sampler.wait(60)
    events = sum(r["events"] for r in collected)
    latencies = sorted(x for r in collected for x in r["latencies"])
    app_cpu = sum(r["cpu_seconds"] for r in collected)
    pod_cpu = app_cpu + (sidecar_cpu if through_sidecar else 0.0)
    return {
        "mode": mode,
        "processes": processes,
        "offered_per_second": rate,
        "event_bytes": size,
        "events": events,
        "wall_seconds": wall,
        "delivered_ratio": len(latencies) / events,
        "failures": sum(r["failures"] for r in collected),
        "left": sum(r["left"] for r in collected),
        "app_cpu_s_per_m": app_cpu / events * 1e6,
        "sidecar_cpu_s_per_m": sidecar_cpu / events * 1e6 if through_sidecar else 0.0,
        "pod_cpu_s_per_m": pod_cpu / events * 1e6,
        "produce_us": statistics.median(r["produce_us"] for r in collected),
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "p999_ms": percentile(latencies, 0.999) * 1e3,
        "broker_connections": peak_apps + (peak_sidecar if through_sidecar else 0),
        "app_broker_connections": peak_apps,
        "sidecar_rss_mb": peak_rss / 2**20 if through_sidecar else 0.0,
        "events_per_call": events / calls if through_sidecar and calls else 0.0,
        **broker_side(brokers0, brokers, peak_brokers, brokers_idle, events, size, wall),
    }


def peak(a: BrokerSample, b: BrokerSample) -> BrokerSample:
    """The larger connection count and heap of two readings (the rest is not used)."""
    return BrokerSample(
        connections=max(a.connections, b.connections), heap_bytes=max(a.heap_bytes, b.heap_bytes)
    )


def broker_side(
    before: BrokerSample,
    after: BrokerSample,
    peaks: BrokerSample,
    idle: BrokerSample,
    events: int,
    size: int,
    wall: float,
) -> dict[str, float]:
    """What the brokers measured over one scenario, summed over the cluster.

    Records per Produce request: a request carries one batch per partition it writes, so this
    is the batching the brokers see. Payload bytes per byte in: the event bytes the apps produced
    over the bytes the brokers received (batch headers included): compression and framing.
    """
    requests = after.produce_requests - before.produce_requests
    bytes_in = after.bytes_in - before.bytes_in
    return {
        "broker_produce_requests_per_s": requests / wall,
        "broker_records_per_request": (after.records_in - before.records_in) / requests
        if requests
        else 0.0,
        "broker_bytes_in_per_s": bytes_in / wall,
        "broker_payload_per_byte_in": events * size / bytes_in if bytes_in else 0.0,
        "broker_cpu_s_per_m": (after.cpu_ns - before.cpu_ns) / 1e9 / events * 1e6,
        "broker_gc_ms_per_s": (after.gc_ms - before.gc_ms) / wall,
        "broker_heap_mb_peak": peaks.heap_bytes / 2**20,
        "broker_side_connections": peaks.connections,
        "broker_side_connections_idle": idle.connections,
    }


METRICS = (
    "delivered_ratio",
    "app_cpu_s_per_m",
    "sidecar_cpu_s_per_m",
    "pod_cpu_s_per_m",
    "produce_us",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "broker_connections",
    "app_broker_connections",
    "sidecar_rss_mb",
    "events_per_call",
    "broker_produce_requests_per_s",
    "broker_records_per_request",
    "broker_bytes_in_per_s",
    "broker_payload_per_byte_in",
    "broker_cpu_s_per_m",
    "broker_gc_ms_per_s",
    "broker_heap_mb_peak",
    "broker_side_connections",
    "broker_side_connections_idle",
)


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repeats; the CPU ratio is the median of each repeat's own ratio, since the
    two paths of one repeat ran back to back under the same load from the rest of the machine."""
    grouped: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["mode"], row["processes"], row["offered_per_second"]), []).append(
            row
        )
    pod_cpu = {
        (r["mode"], r["processes"], r["offered_per_second"], r["repeat"]): r["pod_cpu_s_per_m"]
        for r in rows
    }
    summary = []
    for (mode, processes, rate), runs in sorted(grouped.items()):
        ratios = [
            pod_cpu[(mode, processes, rate, r["repeat"])]
            / pod_cpu[("direct", processes, rate, r["repeat"])]
            for r in runs
            if ("direct", processes, rate, r["repeat"]) in pod_cpu
        ]
        summary.append(
            {
                "mode": mode,
                "processes": processes,
                "offered_per_second": rate,
                "runs": len(runs),
                **{key: statistics.median(r[key] for r in runs) for key in METRICS},
                "pod_cpu_vs_direct": statistics.median(ratios) if ratios else None,
            }
        )
    return summary


def report(summary: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    index = {(r["mode"], r["processes"], r["offered_per_second"]): r for r in summary}
    keys = sorted({(r["processes"], r["offered_per_second"]) for r in summary})
    modes = ["direct", *sorted({r["mode"] for r in summary} - {"direct"})]
    lines = [
        "# Fleet benchmark: one pod at equal offered load",
        "",
        f"{meta['brokers']} brokers, {PARTITIONS} partitions, {meta['event_bytes']} B events, "
        f"{meta['seconds']:.0f} s per scenario, open loop (latency from each event's intended "
        f"time), median of {meta['repeats']} interleaved run(s); {meta['cpu_count']} CPU cores "
        "shared by brokers, sidecar and app processes. CPU is user + system from /proc, every "
        "thread; the pod is the app processes plus, through the sidecar, the sidecar.",
        "",
        "| processes x events/s | path | pod CPU s per M events | of which sidecar | "
        "pod CPU sidecar/direct (median of each repeat's) | produce() µs | p50 ms | p99 ms | "
        "p99.9 ms | delivered | broker conns | sidecar RSS MB | events per call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # Every row once, in table order: by load, direct first.
    ordered = [
        (processes, rate, mode, index[(mode, processes, rate)])
        for processes, rate in keys
        for mode in modes
        if (mode, processes, rate) in index
    ]
    for processes, rate, mode, row in ordered:
        ratio = (
            f"{row['pod_cpu_vs_direct']:.2f}x"
            if mode != "direct" and row["pod_cpu_vs_direct"] is not None
            else ""
        )
        lines.append(
            f"| {processes} x {rate / processes:,.0f} | {mode} | "
            f"{row['pod_cpu_s_per_m']:.1f} | "
            f"{row['sidecar_cpu_s_per_m']:.1f} | {ratio} | {row['produce_us']:.1f} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['p999_ms']:.1f} | "
            f"{row['delivered_ratio']:.4f} | {row['broker_connections']:.0f} "
            f"(apps {row['app_broker_connections']:.0f}) | "
            + (
                f"{row['sidecar_rss_mb']:.0f} | {row['events_per_call']:.1f}"
                if mode != "direct"
                else " |"
            )
            + " |"
        )
    lines += [
        "",
        "The brokers' own metrics (JMX through Jolokia, summed over the brokers): Produce requests "
        "and bytes in per second, records per Produce request (batching as the brokers see it), "
        "payload bytes per byte received (compression and framing), broker CPU per million "
        "events, GC time per second, peak heap, and connections at the brokers (peak; before the "
        "apps started, the sidecar's own).",
        "",
        "| processes x events/s | path | Produce req/s | records per request | bytes in/s | "
        "payload per byte in | broker CPU s per M events | GC ms/s | heap MB peak | "
        "connections at brokers (idle) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for processes, rate, mode, row in ordered:
        lines.append(
            f"| {processes} x {rate / processes:,.0f} | {mode} | "
            f"{row['broker_produce_requests_per_s']:,.0f} | "
            f"{row['broker_records_per_request']:.1f} | "
            f"{row['broker_bytes_in_per_s']:,.0f} | "
            f"{row['broker_payload_per_byte_in']:.2f} | {row['broker_cpu_s_per_m']:.1f} | "
            f"{row['broker_gc_ms_per_s']:.1f} | {row['broker_heap_mb_peak']:.0f} | "
            f"{row['broker_side_connections']:.0f} "
            f"({row['broker_side_connections_idle']:.0f}) |"
        )
    lines += ["", f"Sidecar RSS idle (before the first scenario): {meta['idle_rss_mb']:.0f} MB."]
    if meta.get("knee"):
        lines += ["", *knee_lines(meta["knee"])]
    if meta["capacity_events_per_second"]:
        capacity = meta["capacity_events_per_second"]
        lines.append(
            f"Capacity, 1 process, closed loop: direct {capacity['direct']:,.0f} events/s, "
            f"sidecar {capacity['sidecar']:,.0f} ({capacity['sidecar'] / capacity['direct']:.2f})."
        )
    (out / "fleet.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib  # noqa: PLC0415 - only for the chart

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    labels = [f"{p}x{r / p:,.0f}/s" for p, r in keys]
    width = 0.8 / len(modes)
    for number, mode in enumerate(modes):
        offset = (number - (len(modes) - 1) / 2) * width
        rows = [index.get((mode, *key)) for key in keys]
        xs = [i + offset for i, row in enumerate(rows) if row]
        present = [row for row in rows if row]
        for axis, metric in zip(
            axes, ("pod_cpu_s_per_m", "p99_ms", "broker_connections"), strict=True
        ):
            axis.bar(xs, [row[metric] for row in present], width=width, label=mode)
    titles = ("pod CPU s per million events", "produce→callback p99 (ms)", "broker connections")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xticks(range(len(labels)), labels)
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "fleet.png", dpi=100)


def knee_of(rows: list[dict[str, Any]]) -> float | None:
    """The lowest offered load whose p99 passes twice the p99 at the lowest load, or whose
    events were not all delivered; None when the sweep never got there."""
    ordered = sorted(rows, key=lambda r: r["offered_per_second"])
    base = ordered[0]["p99_ms"]
    for row in ordered[1:]:
        if row["p99_ms"] > 2 * base or row["delivered_ratio"] < 1.0:
            return float(row["offered_per_second"])
    return None


def knee_lines(sweep: dict[str, Any]) -> list[str]:
    """The knee section of fleet.md."""
    rows = sweep["rows"]
    modes = sorted({r["mode"] for r in rows}, key=lambda m: (m != "direct", m))
    lines = [
        f"## The knee: {sweep['processes']} processes, offered load rising",
        "",
        "The knee is the lowest offered load whose p99 passes twice the p99 at the lowest load.",
        "",
        "| pod events/s | " + " | ".join(f"{m} p99 ms | {m} pod CPU s/M" for m in modes) + " |",
        "|---|" + "---|---|" * len(modes),
    ]
    for rate in sorted({r["offered_per_second"] for r in rows}):
        cells = []
        for mode in modes:
            row = next(r for r in rows if r["mode"] == mode and r["offered_per_second"] == rate)
            cells.append(f"{row['p99_ms']:.1f} | {row['pod_cpu_s_per_m']:.1f}")
        lines.append(f"| {rate:,.0f} | " + " | ".join(cells) + " |")
    lines.append("")
    for mode in modes:
        knee = sweep["knee"][mode]
        lines.append(
            f"- {mode}: knee at {knee:,.0f} events/s"
            if knee is not None
            else f"- {mode}: no knee up to {max(r['offered_per_second'] for r in rows):,.0f}"
        )
    return lines


def sweep_knee(
    rates: list[float],
    processes: int,
    seconds: float,
    size: int,
    cluster: KafkaCluster,
    sidecar: SidecarProcess,
) -> dict[str, Any]:
    """Both paths at each load in turn (interleaved, so both see the same machine)."""
    rows = []
    for number, rate in enumerate(rates):
        order = ["direct", "sidecar"] if number % 2 == 0 else ["sidecar", "direct"]
        for mode in order:
            row = run_scenario(mode, processes, rate, seconds, size, cluster, sidecar)
            print(json.dumps({"knee": True, **row}), file=sys.stderr, flush=True)
            rows.append(row)
    knee = {mode: knee_of([r for r in rows if r["mode"] == mode]) for mode in ("direct", "sidecar")}
    return {"processes": processes, "rows": rows, "knee": knee}


def check(summary: list[dict[str, Any]], capacity: dict[str, float]) -> list[str]:
    """CI's ratios: every event delivered, the pod's broker connections through the sidecar at
    most direct's per process plus one per broker, and capacity not below the floor."""
    index = {(r["mode"], r["processes"], r["offered_per_second"]): r for r in summary}
    problems = []
    if capacity:
        ratio = capacity["sidecar"] / capacity["direct"]
        if ratio < CAPACITY_FLOOR:
            problems.append(f"sidecar/direct capacity {ratio:.2f} < {CAPACITY_FLOOR}")
    for (mode, processes, rate), row in index.items():
        if row["delivered_ratio"] < 1.0:
            problems.append(f"{mode} {processes}p: delivered {row['delivered_ratio']:.4f}")
        direct = index.get(("direct", processes, rate))
        if mode != "direct" and direct:
            limit = direct["broker_connections"] / processes + BROKERS
            if row["broker_connections"] > limit:
                problems.append(
                    f"{processes}p: {row['broker_connections']:.0f} broker connections through "
                    f"the sidecar > direct's {direct['broker_connections']:.0f} / {processes} "
                    f"+ {BROKERS}"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--smoke", action="store_true", help="short run for CI, with checks")
    parser.add_argument("--rate", type=float, default=8000, help="events/s of the whole pod")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--processes", default="1,4,16")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--profile", type=Path, help="py-spy the sidecar and one app into here")
    parser.add_argument(
        "--knee",
        default="",
        help="pod events/s to sweep, e.g. 2000,4000,8000 (4 processes): finds each path's knee",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="also a sidecar path whose apps have this client setting, NAME=VALUE "
        "(KAFKA_SIDECAR_LINGER_MS=0: the client before it lingered), interleaved with the others",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.seconds, args.repeats, args.processes = 2000, 4, 1, "4"
    counts = [int(p) for p in args.processes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    modes = ["direct", "sidecar", *(f"sidecar+{setting}" for setting in args.variant)]
    capacity: dict[str, float] = {}
    knee: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kafka-sidecar-fleet-") as tmp:
        cluster = KafkaCluster(default_layout(), Path(tmp) / "kafka", size=BROKERS)
        sidecar = SidecarProcess("", Path(tmp) / "sidecar")
        try:
            cluster.start()
            sidecar.bootstrap_servers = cluster.bootstrap_servers
            sidecar.start()
            time.sleep(1.0)
            idle_rss = rss_bytes(sidecar.pid)
            # A fresh cluster is still electing coordinators: one unmeasured scenario first.
            run_scenario("direct", 1, 1000, 2, args.size, cluster, sidecar)
            for repeat in range(args.repeats):
                for processes in counts:
                    shift = repeat % len(modes)
                    for mode in modes[shift:] + modes[:shift]:
                        row = run_scenario(
                            mode,
                            processes,
                            args.rate,
                            args.seconds,
                            args.size,
                            cluster,
                            sidecar,
                            args.profile,
                        )
                        row["repeat"] = repeat
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        rows.append(row)
            if args.knee:
                rates = [float(rate) for rate in args.knee.split(",")]
                knee = sweep_knee(rates, 4, args.seconds, args.size, cluster, sidecar)
            if args.smoke:
                for mode in ("direct", "sidecar"):
                    capacity[mode] = closed_loop(mode, 1, args.size, 20_000, cluster, sidecar)[
                        "events_per_second"
                    ]
        finally:
            sidecar.stop()
            cluster.stop()
    summary = median_rows(rows)
    meta = {
        "brokers": BROKERS,
        "event_bytes": args.size,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "smoke": args.smoke,
        "cpu_count": os.cpu_count(),
        "idle_rss_mb": idle_rss / 2**20,
        "capacity_events_per_second": capacity,
        "knee": knee,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (args.out / "fleet.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2) + "\n"
    )
    report(summary, meta, args.out)
    print((args.out / "fleet.md").read_text())
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            print(f"\n{path.name}: top functions by own samples")
            for frame, share in top_frames(path):
                print(f"  {share:6.1%}  {frame}")
    if capacity:
        print(f"capacity, 1 process: {capacity}")
    problems = check(summary, capacity) if args.smoke else []
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
