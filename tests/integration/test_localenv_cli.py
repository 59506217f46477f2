"""`make localenv-up` / `make localenv-down`: the state file, idempotent start, exact stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kafka_sidecar_localenv.processes import pid_alive

pytestmark = pytest.mark.integration


def localenv(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafka_sidecar_localenv", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_up_writes_state_twice_safely_and_down_stops_exactly_what_it_started(
    tmp_path: Path,
) -> None:
    root = tmp_path / ".localenv"
    try:
        # --node 0: the e2e session's real node owns the node's bridges; its facts are tested there.
        first = localenv(root, "up", "--node", "0")
        assert first.returncode == 0, first.stderr
        state = json.loads((root / "state.json").read_text())
        assert state["kafka"]["bootstrap_servers"].startswith("127.0.0.1:")
        assert len(state["kafka"]["brokers"]) == 1
        assert Path(state["kubernetes"]["kubeconfig"]).is_file()
        assert Path(state["kubernetes"]["kubectl"]).is_file()
        assert Path(state["kafka"]["brokers"][0]["log"]).is_file()
        pids = state["pids"]
        assert len(pids) == 3
        assert all(pid_alive(pid) for pid in pids)

        kubectl = state["kubernetes"]["kubectl"]
        namespaces = subprocess.run(
            [
                kubectl,
                f"--kubeconfig={state['kubernetes']['kubeconfig']}",
                "get",
                "ns",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "namespace/default" in namespaces

        second = localenv(root, "up", "--node", "0")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr
        assert json.loads((root / "state.json").read_text())["pids"] == pids
    finally:
        down = localenv(root, "down")
    assert down.returncode == 0, down.stderr
    assert not (root / "state.json").exists()
    assert not any(pid_alive(pid) for pid in pids)
