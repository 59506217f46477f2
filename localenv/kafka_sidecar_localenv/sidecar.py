"""Runs ``kafka-sidecar serve`` as a real process for tests, benchmarks and the demo."""

from __future__ import annotations

import os
import re
import signal
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kafka_sidecar_localenv.processes import ManagedProcess, free_port, wait_until

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


@dataclass
class SidecarProcess:
    """One sidecar on a Unix socket in ``workdir``, with its metrics on a free loopback port."""

    bootstrap_servers: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    metrics_port: int = 0
    process: ManagedProcess | None = None
    starts: int = 0

    @property
    def socket_path(self) -> Path:
        return self.workdir / "sidecar.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"

    def start(
        self, timeout: float = 60.0, wait_ready: bool = True, command: list[str] | None = None
    ) -> SidecarProcess:
        """Start and wait for /readyz (broker metadata), or only /healthz when Kafka is down."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = self.metrics_port or free_port(self.host)
        self.starts += 1
        env = {
            "KAFKA_PRODUCER_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SIDECAR_LISTEN": self.address,
            "KAFKA_SIDECAR_METRICS_ADDR": f"{self.host}:{self.metrics_port}",
            **self.env,
        }
        self.process = ManagedProcess(
            name=f"sidecar-{self.starts}",
            argv=command or [sys.executable, "-m", "kafka_sidecar", "serve"],
            log_path=self.workdir / "sidecar.log",
            env=env,
        ).start()
        probe = "/readyz" if wait_ready else "/healthz"
        wait_until(
            self.process,
            lambda: self._get(probe) == 200 and self.socket_path.exists(),
            timeout,
            f"answering {probe}",
        )
        return self

    def _get(self, path: str) -> int:
        with urllib.request.urlopen(self.metrics_url + path, timeout=2) as response:  # noqa: S310
            return int(response.status)

    def metrics(self) -> dict[str, float]:
        """The current /metrics, as ``name{labels}`` -> value."""
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            match = METRIC_LINE.match(line)
            if match:
                values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return values

    def terminate(self) -> None:
        """SIGTERM, as the kubelet sends it; does not wait."""
        os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None
        assert self.process.popen is not None
        return self.process.popen.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=30)

    @property
    def pid(self) -> int:
        assert self.process is not None
        assert self.process.pid is not None
        return self.process.pid


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
