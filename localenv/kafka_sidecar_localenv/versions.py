"""Pinned versions of every component the local environment builds, and where their caches live.

A version is part of its cache directory name, so changing one rebuilds exactly that part.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
# JMX over HTTP inside each broker JVM: the brokers' own metrics for the benchmarks.
JOLOKIA_VERSION = "2.2.9"
MAVEN_DEPENDENCY_PLUGIN = "3.8.1"
KUBERNETES_VERSION = "1.36.3"
# Built from k8s.io/kubernetes at KUBERNETES_VERSION; the last four make the real node.
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kubectl",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
# etcd 3.6.8 is the release kube-apiserver 1.36 itself requires (and envtest pairs with it).
ETCD_VERSION = "3.6.8"


@dataclass(frozen=True)
class CacheLayout:
    """Where each component's build output lives; one folder per component and version."""

    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CacheLayout:
        """``KAFKA_SIDECAR_CACHE`` overrides the default ``~/.cache/kafka-sidecar``."""
        default = Path(env.get("HOME", str(Path.home()))) / ".cache" / "kafka-sidecar"
        return cls(Path(env.get("KAFKA_SIDECAR_CACHE", str(default))))

    @property
    def kafka(self) -> Path:
        return self.root / f"kafka-{KAFKA_VERSION}"

    @property
    def kubernetes(self) -> Path:
        return self.root / f"kubernetes-{KUBERNETES_VERSION}"

    @property
    def etcd(self) -> Path:
        return self.root / f"etcd-{ETCD_VERSION}"

    @property
    def jolokia_agent(self) -> Path:
        return self.root / f"jolokia-{JOLOKIA_VERSION}" / "jolokia-agent.jar"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka / "libs"

    def kubernetes_binary(self, command: str) -> Path:
        """One of KUBERNETES_COMMANDS, or ``pause`` (the pod sandbox's process)."""
        return self.kubernetes / "bin" / command

    @property
    def kube_apiserver(self) -> Path:
        return self.kubernetes_binary("kube-apiserver")

    @property
    def kubectl(self) -> Path:
        return self.kubernetes_binary("kubectl")

    @property
    def images(self) -> Path:
        """Images built from the repository's Dockerfiles, one archive per content hash."""
        return self.root / "images"

    @property
    def etcd_binary(self) -> Path:
        return self.etcd / "bin" / "etcd"


def default_layout() -> CacheLayout:
    """The cache layout for this process's environment."""
    return CacheLayout.from_env(os.environ)
