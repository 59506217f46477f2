"""``make chaos``: every fault, repeated, on the real node with three brokers; exit 1 on any loss.

Starts its own node (kubelet, containerd, control plane, three Kafka brokers on the node's
address), installs the operator the README's way (two replicas, self-managed TLS), runs each
fault on a fresh fleet and writes ``chaos-output/report.md``. Needs root, like the node.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from kubernetes import config as k8s_config

from chaos.faults import FAULTS, Context
from chaos.report import write
from chaos.run import Run, run_fault
from kafka_sidecar_localenv.node import RealNode
from kafka_sidecar_localenv.operator_install import install_operator
from kafka_sidecar_localenv.versions import default_layout


def main(argv: list[str] | None = None) -> int:
    names = [f.name for f in FAULTS]
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("chaos-output"))
    parser.add_argument("--repeats", type=int, default=2, help="runs of each fault (default 2)")
    parser.add_argument("--short", action="store_true", help="shorter outages, fewer kills")
    parser.add_argument(
        "--faults", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}"
    )
    args = parser.parse_args(argv)
    chosen = [f for f in FAULTS if f.name in args.faults.split(",")]
    unknown = set(args.faults.split(",")) - set(names)
    if unknown or args.repeats < 1:
        parser.error(f"--faults: unknown {sorted(unknown)}; allowed: {', '.join(names)}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="kafka-sidecar-chaos-") as workdir:
        node = RealNode(default_layout(), Path(workdir), brokers=3)
        try:
            print("== Starting the real node with three Kafka brokers", flush=True)
            node.start()
            install_operator(node.kubectl_argv())
            api = k8s_config.new_client_from_config(config_file=str(node.kubeconfig))
            ctx = Context(node, api, short=args.short)
            for fault in chosen:
                for repeat in range(1, args.repeats + 1):
                    print(f"== {fault.title}: run {repeat}/{args.repeats}", flush=True)
                    run = run_fault(ctx, fault, repeat)
                    runs.append(run)
                    for check in run.checks:
                        print(f"   {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        finally:
            node.stop()
            # Also after a failure half-way: the runs done so far are the evidence.
            command = "python -m chaos " + shlex.join(argv if argv is not None else sys.argv[1:])
            print(f"== Report: {write(runs, args.out, command)}", flush=True)
    return 0 if len(runs) == len(chosen) * args.repeats and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
