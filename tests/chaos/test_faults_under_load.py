"""The chaos suite's short tier: each fault once, on the real node with three brokers.

`make chaos` runs the same faults longer and repeated (``python -m chaos``); here each runs with a
shorter outage and fewer kills so `make test` can afford it. Runs in its own pytest session (its
node has three brokers; the e2e tier's has one, and only one node fits on a machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config as k8s_config

from chaos.faults import FAULTS, Context, Fault
from chaos.report import write
from chaos.run import Run, run_fault
from kafka_sidecar_localenv.node import RealNode, host_snapshot
from kafka_sidecar_localenv.operator_install import install_operator
from kafka_sidecar_localenv.versions import CacheLayout
from tests.conftest import SERVER_LOGS

pytestmark = pytest.mark.chaos
RUNS: list[Run] = []


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("chaos-output")
    yield out
    if RUNS:
        print(f"\nchaos report: {write(RUNS, out, 'pytest tests/chaos (short)')}")


@pytest.fixture(scope="module")
def chaos(layout: CacheLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """The node with three brokers and the operator installed the README's way; the host must be
    as it was afterwards (iptables rules in pod namespaces, stopped brokers: all restored)."""
    before = host_snapshot()
    node = RealNode(layout, tmp_path_factory.mktemp("node"), brokers=3)
    try:
        node.start()
        SERVER_LOGS.update({f"node/{name}": path for name, path in node.logs().items()})
        install_operator(node.kubectl_argv())
        api = k8s_config.new_client_from_config(config_file=str(node.kubeconfig))
        with api:
            yield Context(node, api, short=True)
    finally:
        node.stop()
    after = host_snapshot()
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, f"the chaos suite left host changes behind: {changed}"


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_nothing_is_lost_under(fault: Fault, chaos: Context, report_dir: Path) -> None:
    run = run_fault(chaos, fault, 1)
    RUNS.append(run)
    print(run.summary())
    assert run.delivery is not None, f"the run did not complete:\n{run.error}"
    failed = [f"{c.name}: {c.detail}" for c in run.checks if not c.ok]
    assert not failed, failed
