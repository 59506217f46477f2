"""The real node refuses to start over another environment, with a clear error, starting nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kafka_sidecar_localenv.node import NODE_BRIDGE, RealNode, link_exists
from kafka_sidecar_localenv.processes import ComponentError
from kafka_sidecar_localenv.versions import CacheLayout

pytestmark = pytest.mark.integration


def test_a_node_bridge_already_present_is_a_clear_error_and_nothing_starts(
    layout: CacheLayout, tmp_path: Path
) -> None:
    assert not link_exists(NODE_BRIDGE), "another local environment is running on this host"
    subprocess.run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"], check=True)
    node = RealNode(layout, tmp_path / "node")
    try:
        with pytest.raises(ComponentError, match=f"bridge {NODE_BRIDGE}.*already exists"):
            node.start()
        assert node.processes == {}
        assert link_exists(NODE_BRIDGE), "a bridge it did not create is left alone"
    finally:
        subprocess.run(["ip", "link", "del", NODE_BRIDGE], check=False)
