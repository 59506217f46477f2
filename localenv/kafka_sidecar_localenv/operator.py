"""Runs ``kafka-sidecar-operator run --local`` as a real process against the local control plane."""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kafka_sidecar_localenv.processes import ManagedProcess, free_port, wait_until


@dataclass
class OperatorProcess:
    """The operator with its webhook on 127.0.0.1 and its own ports."""

    kubeconfig: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    webhook_port: int = 0
    metrics_port: int = 0
    health_port: int = 0
    process: ManagedProcess | None = None
    starts: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60.0, command: list[str] | None = None) -> OperatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.webhook_port = self.webhook_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.health_port = self.health_port or free_port()
        self.starts += 1
        self.process = ManagedProcess(
            name=f"operator-{self.starts}",
            argv=command or [sys.executable, "-m", "kafka_sidecar_operator", "run", "--local"],
            log_path=self.workdir / "operator.log",
            env={
                "KUBECONFIG": str(self.kubeconfig),
                "KAFKA_SIDECAR_OPERATOR_WEBHOOK_PORT": str(self.webhook_port),
                "KAFKA_SIDECAR_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "KAFKA_SIDECAR_OPERATOR_HEALTH_PORT": str(self.health_port),
                **self.env,
            },
        ).start()
        wait_until(self.process, self._healthy, timeout, "healthy (/healthz)")
        return self

    def _healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:  # noqa: S310
            return str(response.read().decode())

    @property
    def pid(self) -> int:
        assert self.process is not None
        assert self.process.pid is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=20)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
