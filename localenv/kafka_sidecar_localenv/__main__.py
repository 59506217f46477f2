"""``python -m kafka_sidecar_localenv install|up|down|status``: the Makefile's localenv targets.

``up`` writes ``.localenv/state.json`` (see docs/architecture.md) and leaves the servers running
detached; ``down`` stops exactly the pids recorded there, undoes the node's host changes and removes
the state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kafka_sidecar_localenv.install import ensure_all, say
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.node import NODE_NAME, RealNode, teardown
from kafka_sidecar_localenv.processes import ComponentError, pid_alive, terminate
from kafka_sidecar_localenv.versions import CacheLayout, default_layout


def state_pids(state: dict[str, Any]) -> list[int]:
    """Every pid recorded in a state file, API server before etcd so watches close cleanly."""
    return [int(pid) for pid in state.get("pids", [])]


def up(root: Path, brokers: int, node: bool) -> int:
    state_path = root / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if all(pid_alive(pid) for pid in state_pids(state)):
            say(f"already running; state in {state_path}")
            print(state_path.read_text())
            return 0
        say("a previous environment is partly down; stopping what is left of it")
        down(root)
    layout = ensure_all(node=node)
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if node:
        return up_node(root, layout, brokers, started)
    kafka = KafkaCluster(layout, root / "kafka", size=brokers)
    plane = ControlPlane(layout, root / "kubernetes")
    try:
        kafka.start()
        say(
            f"Kafka ({brokers} node(s)) ready at {kafka.bootstrap_servers} "
            f"after {time.monotonic() - started:.1f}s"
        )
        mark = time.monotonic()
        plane.start()
        say(f"kube-apiserver ready at {plane.server} after {time.monotonic() - mark:.1f}s")
    except ComponentError as error:
        plane.stop()
        kafka.stop()
        say(str(error))
        return 1
    processes = [plane.apiserver, plane.etcd] + [n.process for n in kafka.nodes]
    state = {
        "kafka": kafka.describe(),
        "kubernetes": plane.describe(),
        "pids": [p.pid for p in processes if p is not None],
    }
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    say(f"state written to {state_path}")
    say(f"try: KUBECONFIG={plane.kubeconfig} {plane.kubectl} get namespaces")
    return 0


def up_node(root: Path, layout: CacheLayout, brokers: int, started: float) -> int:
    """The real single-node cluster with Kafka on the node's address (pods reach both)."""
    cluster = RealNode(layout, root / "node", brokers=brokers)
    try:
        cluster.start()
    except ComponentError as error:
        say(str(error))
        return 1
    assert cluster.kafka is not None
    assert cluster.plane is not None
    say(
        f"node {NODE_NAME} Ready, Kafka at {cluster.kafka.bootstrap_servers}, "
        f"kube-apiserver at {cluster.plane.server}, after {time.monotonic() - started:.0f}s"
    )
    state = {
        "kafka": cluster.kafka.describe(),
        "kubernetes": {**cluster.plane.describe(), "node": cluster.describe()},
        "pids": cluster.pids(),
    }
    (root / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    say(f"state written to {root / 'state.json'}")
    say(f"try: KUBECONFIG={cluster.kubeconfig} {cluster.plane.kubectl} get pods -A -o wide")
    return 0


def down(root: Path) -> int:
    state_path = root / "state.json"
    if not state_path.exists():
        say("nothing to stop (no .localenv/state.json)")
        return 0
    state = json.loads(state_path.read_text())
    node = state["kubernetes"].get("node")
    if node:
        kube = state["kubernetes"]
        kubectl = [kube["kubectl"], f"--kubeconfig={kube['kubeconfig']}"]
        teardown(Path(node["workdir"]), default_layout(), kubectl, state_pids(state))
    for pid in state_pids(state):
        terminate(pid, grace=20)
    state_path.unlink()
    for folder in ("kafka", "kubernetes", "node"):
        shutil.rmtree(root / folder, ignore_errors=True)
    say("stopped every process recorded in the state file")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kafka_sidecar_localenv")
    parser.add_argument("command", choices=["install", "up", "down", "status", "env"])
    parser.add_argument("--root", type=Path, default=Path(".localenv"))
    parser.add_argument(
        "--node",
        choices=["0", "1"],
        default=os.environ.get("NODE", "1"),
        help="1 (default): the real node (root); 0: Kafka + etcd + kube-apiserver on 127.0.0.1",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        default=int(os.environ.get("BROKERS", "1")),
        help="Kafka nodes to start (default: $BROKERS or 1)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.brokers not in (1, 3):
        parser.error(f"--brokers/BROKERS must be 1 or 3, got {args.brokers}")
    node = args.node == "1"
    if args.command == "install":
        ensure_all(node=node)
        return 0
    if args.command == "up":
        return up(root, args.brokers, node)
    if args.command == "down":
        return down(root)
    state_path = root / "state.json"
    if args.command == "env":
        if not state_path.exists():
            say("not running: make localenv-up first")
            return 1
        print(shell_exports(json.loads(state_path.read_text())))
        return 0
    print(state_path.read_text() if state_path.exists() else "not running")
    return 0


def shell_exports(state: dict[str, Any]) -> str:
    """``eval $(make -s localenv-env)``: the matching kubectl first on PATH, its kubeconfig."""
    kubectl_dir = Path(state["kubernetes"]["kubectl"]).parent
    return "\n".join(
        [
            f"export KUBECONFIG={state['kubernetes']['kubeconfig']}",
            f'export PATH="{kubectl_dir}:$PATH"',
            f"export KAFKA_BOOTSTRAP_SERVERS={state['kafka']['bootstrap_servers']}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
