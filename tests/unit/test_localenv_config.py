"""Pure parts of the local environment: module pinning, broker configuration, cache layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_sidecar_localenv.install import staging_modules, version_ldflags
from kafka_sidecar_localenv.kafka import KafkaNode, node_properties
from kafka_sidecar_localenv.versions import KUBERNETES_VERSION, CacheLayout

pytestmark = pytest.mark.unit

KK_GO_MOD = """module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
\tgithub.com/spf13/cobra v1.10.2
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
\tgithub.com/foo/bar => github.com/foo/bar v1.0.0
)
"""


def test_staging_modules_are_read_from_the_replace_block_only() -> None:
    assert staging_modules(KK_GO_MOD) == ["k8s.io/api", "k8s.io/streaming"]


def test_version_ldflags_stamp_both_version_packages() -> None:
    flags = version_ldflags("1.36.3")
    assert "-X 'k8s.io/component-base/version.gitVersion=v1.36.3'" in flags
    assert "-X 'k8s.io/client-go/pkg/version.gitMinor=36'" in flags


def test_cache_layout_is_keyed_by_version_and_overridable() -> None:
    layout = CacheLayout.from_env({"HOME": "/home/u"})
    assert layout.root == Path("/home/u/.cache/kafka-sidecar")
    assert layout.kube_apiserver.parent.parent.name == f"kubernetes-{KUBERNETES_VERSION}"
    assert CacheLayout.from_env({"KAFKA_SIDECAR_CACHE": "/c"}).root == Path("/c")


def _node(tmp: Path) -> KafkaNode:
    return KafkaNode(
        node_id=2, port=1000, controller_port=1001, data_dir=tmp / "d", config_path=tmp / "p"
    )


def test_single_node_cluster_needs_no_replication(tmp_path: Path) -> None:
    props = node_properties(_node(tmp_path), "2@127.0.0.1:1001", replication=1)
    assert "offsets.topic.replication.factor=1" in props
    assert "min.insync.replicas=1" in props


def test_three_node_cluster_replicates_internal_topics_and_requires_two_in_sync(
    tmp_path: Path,
) -> None:
    props = node_properties(_node(tmp_path), "1@a:1,2@b:2,3@c:3", replication=3)
    assert "default.replication.factor=3" in props
    assert "min.insync.replicas=2" in props
    assert "controller.quorum.voters=1@a:1,2@b:2,3@c:3" in props
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:1000" in props
