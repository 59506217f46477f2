"""The faults, one at a time, each injected into a fleet that keeps producing.

Each fault returns what it observed as named checks (a check that fails fails the run) plus its
recovery time: from the moment the fault was undone to the moment the fleet was whole again.
Everything a fault changes on the host (iptables rules in a pod's network namespace, a stopped
broker) it restores itself, also when it fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from kubernetes import client as k8s

from chaos.fleet import (
    SIDECAR,
    Background,
    Fleet,
    Shape,
    container_pids,
    put_policy,
)
from chaos.timeline import Timeline, broker_states, scrape
from kafka_sidecar_localenv.images import SAMPLE_APP_IMAGE
from kafka_sidecar_localenv.node import RealNode
from kafka_sidecar_localenv.sample_app import opted_in_pod

OPERATOR_NAMESPACE = "kafka-sidecar-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=kafka-sidecar-operator"
WEBHOOK_TIMEOUT = 5.0  # manifests/webhook: timeoutSeconds
API_SERVER_SLACK = 1.0  # the API server's own work around the webhook call, on a busy machine


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Observed:
    """What a fault saw: its checks, its recovery time and facts for the report."""

    checks: list[Check] = field(default_factory=list)
    recovery_seconds: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))


@dataclass(frozen=True)
class Context:
    node: RealNode
    api: k8s.ApiClient
    short: bool  # the quick tier `make test` runs: shorter outages, fewer kills

    def seconds(self, full: float, short: float) -> float:
        return short if self.short else full


@dataclass(frozen=True)
class Fault:
    """One fault: its fleet, its policy, whether per-key order must hold, and how to inject."""

    name: str
    title: str
    shape: Shape
    policy: dict[str, Any]
    inject: Callable[[Context, Fleet, Timeline], Observed]
    duplicates_allowed: bool  # False: idempotence must leave none
    backpressure: bool = False  # the apps' produce() must have been pushed back


# --- 1. a broker dies and comes back ----------------------------------------------------------


def topic_metadata(fleet: Fleet) -> Any:
    """The fleet topic's partitions as the brokers see them now (quiet while one is down)."""
    admin = AdminClient({"bootstrap.servers": fleet.bootstrap, "log_level": 0})
    return admin.list_topics(fleet.topic, timeout=10).topics[fleet.topic].partitions


def replicas_in_sync(fleet: Fleet) -> bool:
    """Every partition of the fleet's topic has all its replicas in sync again."""
    return all(len(p.isrs) == len(p.replicas) for p in topic_metadata(fleet).values())


def sidecars_see_broker(fleet: Fleet, broker: str, up: float) -> bool:
    pages = [scrape(p) for p in fleet.pods()]
    return all(p is not None and broker_states(p).get(broker) == up for p in pages)


def kill_partition_leader(ctx: Context, fleet: Fleet, timeline: Timeline) -> Observed:
    """kill -9 the broker leading partition 0, restart it after the outage."""
    kafka = ctx.node.kafka
    assert kafka is not None
    seen = Observed()
    leader = int(topic_metadata(fleet)[0].leader)
    broker = next(n for n in kafka.nodes if n.node_id == leader)
    assert broker.process is not None
    outage = ctx.seconds(20, 12)
    mark = timeline.mark(f"broker {leader} killed (-9), restarted after {outage:.0f}s")
    broker.process.kill()
    try:
        time.sleep(outage)
    finally:
        kafka.start_node(broker)
    timeline.end(mark)
    restarted = timeline.now()
    in_sync = timeline.wait(lambda: replicas_in_sync(fleet), 120, "every replica back in sync")
    seen.facts["in_sync_after_seconds"] = round(in_sync - restarted, 1)
    back = timeline.wait(
        lambda: sidecars_see_broker(fleet, str(leader), 1.0), 120, f"broker {leader} up again"
    )
    seen.recovery_seconds = back - restarted
    seen.facts["broker"] = leader
    down = [at for at in timeline.down_seen.get(str(leader), []) if at >= mark.start]
    seen.check(
        "the sidecars reported the broker's loss, then its recovery",
        bool(down) and max(down) < back,
        f'kafka_sidecar_broker_up{{broker="{leader}"}} was 0 in {len(down)} samples; 1 in '
        f"every sidecar {seen.recovery_seconds:.1f}s after the restart",
    )
    return seen


# --- 2. sidecars killed again and again --------------------------------------------------------


def kill_sidecars_repeatedly(ctx: Context, fleet: Fleet, timeline: Timeline) -> Observed:
    """SIGKILL every pod's sidecar ``kills`` times, one every 60/kills seconds, each as soon as
    the kubelet has it running again (its restart back-off can stretch the minute)."""
    seen = Observed()
    kills = int(ctx.seconds(5, 2))
    interval = 60 / 5
    pods = {p.metadata.name for p in fleet.pods()}
    done = dict.fromkeys(pods, 0)
    mark = timeline.mark(f"every sidecar killed {kills}x (SIGKILL)")
    next_at = dict.fromkeys(pods, 0.0)
    deadline = time.monotonic() + 300
    while any(n < kills for n in done.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"sidecar kills done {done} of {kills} each in 300s")
        for pod in fleet.pods():
            name = pod.metadata.name
            if name in done and done[name] < kills and time.monotonic() >= next_at[name]:
                pids = container_pids(pod, SIDECAR)
                if pids:
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    done[name] += 1
                    next_at[name] = time.monotonic() + interval
        time.sleep(0.5)
    timeline.end(mark)
    span = mark.end - mark.start if mark.end is not None else 0.0
    seen.facts["kills"] = sum(done.values())
    seen.facts["kill_span_seconds"] = round(span, 1)
    last = timeline.now()
    back = timeline.wait(lambda: sidecars_ready(fleet, kills), 300, "every sidecar ready again")
    seen.recovery_seconds = back - last
    return seen


def sidecars_ready(fleet: Fleet, restarts: int) -> bool:
    """Every sidecar restarted by the kubelet at least ``restarts`` times and ready again."""
    for pod in fleet.pods():
        statuses = [s for s in pod.status.init_container_statuses or [] if s.name == SIDECAR]
        if not statuses or not statuses[0].ready or statuses[0].restart_count < restarts:
            return False
    return True


# --- 3. the pod's network to Kafka is lost -----------------------------------------------------


def netns_iptables(pid: int, *rule: str) -> None:
    """Run iptables in the network namespace of ``pid`` only (never the host's tables)."""
    argv = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", *rule]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def kafka_unreachable(pids: list[int], host: str, ports: list[int]) -> Iterator[None]:
    """DROP every packet from each pod (one pid per pod) to the brokers, for the block's length."""
    rules: list[tuple[str, ...]] = [
        ("OUTPUT", "-p", "tcp", "-d", host, "--dport", str(p), "-j", "DROP") for p in ports
    ]
    added: list[tuple[int, tuple[str, ...]]] = []
    try:
        for pid in pids:
            for rule in rules:
                netns_iptables(pid, "-I", *rule)
                added.append((pid, rule))
        yield
    finally:
        for pid, rule in added:
            with contextlib.suppress(subprocess.SubprocessError, FileNotFoundError):
                netns_iptables(pid, "-D", *rule)


def memory_cgroup(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory", path.lstrip("/"))
    raise FileNotFoundError(f"process {pid} has no cgroup v1 memory group")


def cut_the_network(ctx: Context, fleet: Fleet, timeline: Timeline) -> Observed:
    """Every pod loses its network to the brokers (in its own namespace) for the outage."""
    kafka = ctx.node.kafka
    assert kafka is not None
    seen = Observed()
    outage = ctx.seconds(30, 20)
    pods = fleet.pods()
    sidecar_pids = {p.metadata.name: container_pids(p, SIDECAR) for p in pods}
    groups = [memory_cgroup(pids[0]) for pids in sidecar_pids.values()]
    # The rules go in through the app's pid: the same network namespace, and a process the
    # fault does not kill, so they can be removed even if a sidecar restarts meanwhile.
    app_pids = [container_pids(p, "app")[0] for p in pods]
    for group in groups:  # the peak from here on, not since the sidecar started
        with contextlib.suppress(OSError):
            (group / "memory.max_usage_in_bytes").write_text("0")
    host = kafka.nodes[0].host
    ports = [n.port for n in kafka.nodes]
    mark = timeline.mark(f"pods cut off from Kafka for {outage:.0f}s (iptables in the pod netns)")
    with kafka_unreachable(app_pids, host, ports):
        time.sleep(outage)
    timeline.end(mark)
    restored = timeline.now()
    peaks = [int((g / "memory.max_usage_in_bytes").read_text()) for g in groups]
    limits = [int((g / "memory.limit_in_bytes").read_text()) for g in groups]
    seen.facts["sidecar_memory_peak_mib"] = [round(p / 2**20, 1) for p in peaks]
    seen.facts["sidecar_memory_limit_mib"] = [round(limit / 2**20) for limit in limits]
    seen.check(
        "sidecar memory stayed under its limit",
        all(p < limit for p, limit in zip(peaks, limits, strict=True)),
        f"peaks {seen.facts['sidecar_memory_peak_mib']} MiB of "
        f"{seen.facts['sidecar_memory_limit_mib']} MiB",
    )
    restarts = sum(
        s.restart_count
        for p in fleet.pods()
        for s in p.status.init_container_statuses or []
        if s.name == SIDECAR
    )
    seen.check("no sidecar was killed (out of memory)", restarts == 0, f"{restarts} restarts")
    window = [s for s in timeline.samples if mark.start + 5 <= s.at <= restored]
    stalled = [s.events_per_second for s in window]
    seen.facts["events_per_second_during"] = round(max(stalled, default=0.0), 1)
    seen.check(
        "nothing reached Kafka while cut off",
        len(window) >= 3 and all(e == 0 for e in stalled),  # a busy machine samples slowly
        f"at most {seen.facts['events_per_second_during']} events/s in {len(window)} samples "
        "of the outage",
    )
    back = timeline.wait(lambda: caught_up(timeline), 180, "the backlog delivered")
    seen.recovery_seconds = back - restored
    # The sidecars stayed up, so the apps had no reason to fall back: the policy's alert (at a
    # 50% fallback ratio) must not be firing once the network is back.
    alert = fallback_alert(fleet)
    seen.facts["fallback_alert"] = alert
    ratios = [s.fallback_ratio for s in timeline.samples if s.at >= mark.start]
    fell_back = max((r for r in ratios if r is not None), default=0.0)
    seen.check(
        "no app fell back and the fallback alert is not firing",
        fell_back == 0 and alert != "True",
        f"highest fallback ratio {fell_back:.2f}; FallbackAlert={alert}",
    )
    return seen


def fallback_alert(fleet: Fleet) -> str:
    """The status of the fleet policy's FallbackAlert condition ("" before it has one)."""
    body: Any = k8s.CustomObjectsApi(fleet.api).get_namespaced_custom_object(
        "kafka-sidecar.io", "v1alpha1", fleet.namespace, "kafkasidecarpolicies", "orders"
    )
    conditions = (body.get("status") or {}).get("conditions", [])
    return next((str(c["status"]) for c in conditions if c["type"] == "FallbackAlert"), "")


def caught_up(timeline: Timeline) -> bool:
    """Events/s back within the fleet's offered rate after the backlog flushed."""
    recent = timeline.samples[-3:]
    offered = timeline.fleet.shape.pods * timeline.fleet.shape.workers * timeline.fleet.shape.rate
    return len(recent) == 3 and all(0 < s.events_per_second <= 1.5 * offered for s in recent)


# --- 4. the control plane: kube-apiserver crashes, the operator's leader dies ------------------


@dataclass
class Probe:
    """One pod created during the fault: when, how long the create took, what it was told."""

    name: str
    created_at: float
    latency: float
    decision: str | None


@dataclass
class PodCreator:
    """Creates opted-in pods (never scheduled: a node selector no node has) at ``rate``/s."""

    fleet: Fleet
    timeline: Timeline
    rate: float = 2.0
    probes: list[Probe] = field(default_factory=list)
    refused: int = 0  # creates the API server could not take while it was down
    _creator: Background | None = None

    def body(self) -> dict[str, Any]:
        return opted_in_pod(
            SAMPLE_APP_IMAGE,
            name=f"probe-{uuid.uuid4().hex[:8]}",
            labels={"app": "probe"},
            node_selector={"kafka-sidecar.io/chaos": "never-scheduled"},
        )

    def start(self) -> PodCreator:
        self._creator = Background(self._run).start()
        return self

    def stop(self) -> None:
        if self._creator is not None:
            self._creator.stop()

    def _run(self, stopping: threading.Event) -> None:
        # Its own client: a create that hangs must not hold up the fleet's calls.
        core = k8s.CoreV1Api(self.fleet.api)
        while not stopping.wait(1 / self.rate):
            body = self.body()
            at, started = self.timeline.now(), time.monotonic()
            try:
                pod = core.create_namespaced_pod(self.fleet.namespace, body, _request_timeout=30)
            except Exception:  # the API server is down: the client tries the next pod
                self.refused += 1
                continue
            decision = decision_of(pod)
            latency = time.monotonic() - started
            self.probes.append(Probe(body["metadata"]["name"], at, latency, decision))


def decision_of(pod: Any) -> str | None:
    """What the webhook decided for ``pod`` (its status annotation), None without one."""
    raw = (pod.metadata.annotations or {}).get("kafka-sidecar.io/status")
    return str(json.loads(raw).get("decision")) if raw else None


def operator_leader(api: k8s.ApiClient) -> str:
    """The pod kopf peering lets reconcile: the live peer of the highest priority."""
    custom = k8s.CustomObjectsApi(api)
    body: Any = custom.get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "kafka-sidecar-operator"
    )
    peers = body.get("status") or {}
    return str(max(peers, key=lambda p: int((peers[p] or {}).get("priority", 0))))


def probe_policy(fleet: Fleet, percentage: int) -> None:
    spec = {
        "selector": {"matchLabels": {"app": "probe"}},
        "rollout": {"percentage": percentage, "granularity": "pod"},
        "sidecar": {"bootstrapServers": fleet.bootstrap},
    }
    put_policy(fleet.api, fleet.namespace, "probes", spec)


def crash_the_control_plane(ctx: Context, fleet: Fleet, timeline: Timeline) -> Observed:
    """Pods keep being created while kube-apiserver crashes and restarts, then while the
    operator's leader is killed right after a rollout step (probes 0% -> 100%)."""
    plane = ctx.node.plane
    assert plane is not None
    seen = Observed()
    probe_policy(fleet, 0)
    time.sleep(3)
    creator = PodCreator(fleet, timeline).start()
    try:
        time.sleep(5)
        restart = timeline.mark("kube-apiserver crashed (-9) and restarted")
        seen.facts["apiserver_down_seconds"] = round(plane.restart_apiserver(down_for=3), 1)
        timeline.end(restart)
        time.sleep(5)
        rollout_at = timeline.now()
        probe_policy(fleet, 100)
        leader = operator_leader(fleet.api)
        mark = timeline.mark(f"rollout 0->100%, operator leader {leader} killed")
        core = k8s.CoreV1Api(fleet.api)
        pod = core.read_namespaced_pod(leader, OPERATOR_NAMESPACE)
        pids = container_pids(pod, "operator")
        if not pids:
            raise RuntimeError(f"the leader {leader} has no running operator process to kill")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        timeline.end(mark)
        seen.facts["leader_killed"] = leader
        time.sleep(ctx.seconds(30, 20))
    finally:
        creator.stop()
    probes = creator.probes
    slowest = max((p.latency for p in probes), default=0.0)
    seen.facts.update(pods_created=len(probes), creates_refused=creator.refused)
    seen.facts["slowest_create_seconds"] = round(slowest, 2)
    seen.check(
        "no pod blocked longer than the webhook timeout",
        slowest <= WEBHOOK_TIMEOUT + API_SERVER_SLACK,
        f"slowest of {len(probes)} creates {slowest:.2f}s (timeout {WEBHOOK_TIMEOUT:.0f}s); "
        f"{creator.refused} refused while the API server was down",
    )
    # A just-restarted kube-apiserver may admit a pod before it can reach the webhook's Service
    # (failurePolicy Ignore: the pod is created as it was). Counted, and only in that window.
    reopened = (restart.end or restart.start) + 10
    failed_open = [
        p for p in probes if p.decision is None and restart.start <= p.created_at <= reopened
    ]
    seen.facts["admitted_without_webhook_after_restart"] = len(failed_open)
    # The webhooks learn a new percentage by their watch: allow 10 s before it must show.
    wrong = [
        p
        for p in probes
        if p not in failed_open
        and (
            p.decision is None
            or (p.created_at < rollout_at and p.decision != "skipped")
            or (p.created_at > rollout_at + 10 and p.decision != "injected")
        )
    ]
    seen.check(
        "every pod got its policy's decision",
        not wrong and bool(probes),
        f"{len(probes) - len(wrong)} of {len(probes)} right"
        + (f"; wrong: {[(p.name, p.decision) for p in wrong[:5]]}" if wrong else ""),
    )
    killed_at = timeline.now()

    def status_right() -> bool:
        # The pods that exist, not the creates that answered: one refused mid-restart may exist.
        listed = core.list_namespaced_pod(fleet.namespace, label_selector="app=probe").items
        injected = sum(decision_of(p) == "injected" for p in listed)
        custom = k8s.CustomObjectsApi(fleet.api)
        body: Any = custom.get_namespaced_custom_object(
            "kafka-sidecar.io", "v1alpha1", fleet.namespace, "kafkasidecarpolicies", "probes"
        )
        status = body.get("status") or {}
        return bool(
            status.get("matchedPods") == len(listed) and status.get("injectedPods") == injected
        )

    try:
        settled = timeline.wait(status_right, 60, "the probes policy's status")
        seen.recovery_seconds = settled - killed_at
        seen.check("policy status right within a minute", True, f"{settled - killed_at:.0f}s")
    except TimeoutError as error:
        seen.check("policy status right within a minute", False, str(error))
    with contextlib.suppress(k8s.ApiException):
        core.delete_collection_namespaced_pod(fleet.namespace, label_selector="app=probe")
    return seen


# --- 5. a rolling restart of the Deployment at 100% -------------------------------------------


def rolling_restart(ctx: Context, fleet: Fleet, timeline: Timeline) -> Observed:
    """``kubectl rollout restart`` while the fleet produces: old pods drain, new ones take over."""
    seen = Observed()
    before = {p.metadata.name for p in fleet.pods()}
    mark = timeline.mark("kubectl rollout restart deployment/orders")
    proc = ctx.node.kubectl("rollout", "restart", "deployment/orders", "-n", fleet.namespace)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    done = ctx.node.kubectl(
        "rollout", "status", "deployment/orders", "-n", fleet.namespace, "--timeout=240s",
        timeout=260,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    timeline.end(mark)
    ended = timeline.now()
    fleet.wait_ready(fleet.shape.pods)
    seen.recovery_seconds = timeline.now() - ended
    replaced = {p.metadata.name for p in fleet.pods()}
    seen.check(
        "every pod was replaced",
        not replaced & before,
        f"{len(before)} old pods, {len(replaced)} new ones",
    )
    return seen


ALERT = {"alert": {"maxRatio": 0.5, "window": "30s", "sustainedFor": "5s"}}

FAULTS = (
    Fault(
        "broker-kill", "A broker dies and comes back", Shape(), {"fallback": ALERT},
        kill_partition_leader, duplicates_allowed=False,
    ),
    Fault(
        "sidecar-kills", "Sidecars killed five times in a minute", Shape(), {"fallback": ALERT},
        kill_sidecars_repeatedly, duplicates_allowed=True,
    ),
    Fault(
        "network-loss", "The pods lose the network to Kafka", Shape(queue_messages=1500),
        {"fallback": ALERT}, cut_the_network, duplicates_allowed=False, backpressure=True,
    ),
    Fault(
        "control-plane", "kube-apiserver crashes; the operator's leader dies mid-rollout",
        Shape(pods=1), {"selector": {"matchLabels": {"app": "orders"}}},
        crash_the_control_plane, duplicates_allowed=False,
    ),
    Fault(
        "rolling-restart", "Rolling restart of a Deployment at 100%", Shape(), {},
        rolling_restart, duplicates_allowed=False,
    ),
)  # fmt: skip
