"""A real Apache Kafka cluster in KRaft mode (combined broker+controller nodes).

It listens on 127.0.0.1, or on the real node's address when pods must reach it.

One node for tests, three for failover tests and benchmarks; static controller quorum so every
node is formatted the same way and the cluster forms without ``--standalone``.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka_sidecar_localenv.processes import (
    ComponentError,
    ManagedProcess,
    free_port,
    require_installed,
    wait_until,
)
from kafka_sidecar_localenv.versions import CacheLayout

HEAP = ["-Xms256m", "-Xmx512m"]


@dataclass
class KafkaNode:
    """One combined broker+controller node."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    config_path: Path
    process: ManagedProcess | None = None
    host: str = "127.0.0.1"
    # Jolokia's HTTP port (on 127.0.0.1 only): the broker's own JMX metrics.
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def node_properties(node: KafkaNode, voters: str, replication: int) -> str:
    """server.properties for one node; replication factors follow the cluster size."""
    min_isr = 1 if replication == 1 else 2
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{node.address},CONTROLLER://{node.host}:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://{node.address}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={node.data_dir}",
            "num.partitions=1",
            f"default.replication.factor={replication}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replication}",
            f"transaction.state.log.replication.factor={replication}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replication}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            # A restarted broker gets its preferred leaderships back within seconds (a default
            # cluster takes up to 5 minutes): failover tests see the whole round trip.
            "leader.imbalance.check.interval.seconds=5",
            "auto.create.topics.enable=true",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]
    )


@dataclass
class KafkaCluster:
    """A running (or stopped) Kafka cluster rooted at ``workdir``."""

    layout: CacheLayout
    workdir: Path
    size: int = 1
    nodes: list[KafkaNode] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            *HEAP,
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            f"-Dlog4j2.configurationFile={self.layout.kafka / 'log4j2.properties'}",
            "-cp",
            f"{self.layout.kafka_libs}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        """Format and start every node, then wait until each one answers metadata."""
        require_installed(self.layout.kafka_libs)
        require_installed(self.layout.jolokia_agent)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            KafkaNode(
                node_id=index,
                port=free_port(self.host),
                controller_port=free_port(self.host),
                data_dir=self.workdir / f"node{index}" / "data",
                config_path=self.workdir / f"node{index}" / "server.properties",
                host=self.host,
                metrics_port=free_port("127.0.0.1"),
            )
            for index in range(1, self.size + 1)
        ]
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        cluster_id = uuid.uuid4().hex[:22]
        for node in self.nodes:
            node.config_path.parent.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(node_properties(node, voters, replication=self.size))
            self._format(node, cluster_id)
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)
        return self

    def _format(self, node: KafkaNode, cluster_id: str) -> None:
        # StorageTool is short-lived and needs little heap; keep its start fast.
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(node.config_path),
            "--ignore-formatted",
        )
        argv = [a for a in argv if a not in HEAP]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ComponentError(
                f"kafka node {node.node_id}: storage format failed\n{proc.stdout}{proc.stderr}"
            )

    def start_node(self, node: KafkaNode) -> None:
        """(Re)start one node with its existing storage, its JMX metrics served by Jolokia."""
        agent = f"-javaagent:{self.layout.jolokia_agent}=host=127.0.0.1,port={node.metrics_port}"
        argv = self._java("kafka.Kafka", str(node.config_path))
        node.process = ManagedProcess(
            name=f"kafka-{node.node_id}",
            argv=[argv[0], agent, *argv[1:]],
            log_path=self.workdir / "logs" / f"kafka-{node.node_id}.log",
        ).start()

    def stop_node(self, node: KafkaNode) -> None:
        if node.process is not None:
            node.process.stop()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Ready means every live broker answers metadata listing all live brokers."""
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - only the venv has it

        live = [n for n in self.nodes if n.process is not None and n.process.alive()]
        for node in live:
            assert node.process is not None
            admin = AdminClient({"bootstrap.servers": node.address, "log_level": 0})

            def answers(admin: AdminClient = admin) -> bool:
                metadata = admin.list_topics(timeout=2)
                return len(metadata.brokers) >= len(live)

            wait_until(node.process, answers, timeout, "answering metadata")

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)

    def logs(self) -> dict[str, Path]:
        return {
            f"kafka-{n.node_id}": self.workdir / "logs" / f"kafka-{n.node_id}.log"
            for n in self.nodes
        }

    def describe(self) -> dict[str, object]:
        """The ``kafka`` section of ``.localenv/state.json``."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "brokers": [
                {
                    "id": n.node_id,
                    "address": n.address,
                    "pid": n.process.pid if n.process else None,
                    "metrics": f"http://127.0.0.1:{n.metrics_port}/jolokia/",
                    "log": str(self.workdir / "logs" / f"kafka-{n.node_id}.log"),
                }
                for n in self.nodes
            ],
        }
