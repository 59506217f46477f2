"""The README's install path for the demo and the chaos suite: CRDs, an overlay, then Ready."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from kafka_sidecar_localenv.processes import ComponentError

REPO = Path(__file__).resolve().parents[2]
CRD = "kafkasidecarpolicies.kafka-sidecar.io"
NAMESPACE = "kafka-sidecar-system"


def _kubectl(kubectl: Sequence[str], *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [*kubectl, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if proc.returncode != 0:
        raise ComponentError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def install_operator(kubectl: Sequence[str], overlay: str = "selfsigned") -> None:
    """``kubectl apply -k manifests/crd``, wait until the CRD is established (polling: `kubectl
    wait` errors out while a new CRD has no conditions at all), ``kubectl apply -k
    manifests/<overlay>``, then wait until the operator's Deployment has rolled out."""
    _kubectl(kubectl, "apply", "-k", str(REPO / "manifests" / "crd"))
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    deadline = time.monotonic() + 60
    while _kubectl(kubectl, "get", "crd", CRD, "-o", established) != "True":
        if time.monotonic() > deadline:
            raise ComponentError(f"CRD {CRD} was not established within 60s")
        time.sleep(0.5)
    _kubectl(kubectl, "apply", "-k", str(REPO / "manifests" / overlay))
    _kubectl(
        kubectl, "rollout", "status", "-n", NAMESPACE, "deployment/kafka-sidecar-operator",
        "--timeout=300s", timeout=320,
    )  # fmt: skip
