"""Following a container's log for as long as it runs, so its last lines outlive the pod.

The sample app prints its delivery report when it stops; by then its pod is being deleted and the
kubelet removes the log with it, so the e2e tests and the demo follow the log from the start.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FollowedLog:
    """``kubectl logs -f`` of one container, kept in memory."""

    kubectl: Sequence[str]  # the kubectl command with its --kubeconfig
    namespace: str
    pod: str
    container: str = "app"
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None

    def start(self) -> FollowedLog:
        argv = [*self.kubectl, "logs", "-f", "-n", self.namespace, self.pod, "-c", self.container]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def following(self) -> bool:
        """True while ``kubectl logs -f`` runs (it ends with the container, or with its API
        server connection)."""
        return self.process is not None and self.process.poll() is None

    def reports(self, timeout: float = 90) -> list[dict[str, Any]]:
        """The JSON lines the container printed, once it ended (or ``timeout`` passed)."""
        assert self.thread is not None
        self.thread.join(timeout)
        self.stop()
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.thread is not None:
            self.thread.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
