"""Starting and stopping the local environment's server processes, with logs kept in files.

Every process started here is recorded in ``STARTED`` so the test session can prove at its end
that nothing it started is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STARTED: list[ManagedProcess] = []


class ComponentError(RuntimeError):
    """A component did not start or answer; the message carries the tail of its log."""


def require_installed(*paths: Path) -> None:
    """Fail with the fix when a component was never built into the cache."""
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise ComponentError(f"not installed: {', '.join(missing)} (run `make localenv-install`)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages and failing-test reports."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class ManagedProcess:
    """One server process: its command, log file and pid."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pid: int | None = None

    def start(self) -> ManagedProcess:
        """Start detached in its own session so a Ctrl-C in the terminal does not half-kill it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        STARTED.append(self)
        return self

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; never raises for a dead process."""
        if self.pid is None:
            return
        terminate(self.pid, grace)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)

    def kill(self) -> None:
        """SIGKILL at once: a crash, as tests of failover need."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if self.popen is not None:
                self.popen.wait(timeout=10)

    def fail(self, reason: str) -> ComponentError:
        """An error naming this component, with its log tail, for a test report."""
        return ComponentError(
            f"{self.name}: {reason}\n--- {self.log_path} ---\n{log_tail(self.log_path)}"
        )


def terminate(pid: int, grace: float) -> None:
    """Stop a process by pid: SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def wait_until(
    process: ManagedProcess, ready: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``ready`` until it holds; fail early with the log when the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise process.fail(f"exited before {what}")
        with contextlib.suppress(Exception):  # any probe error means "not ready yet"
            if ready():
                return
        time.sleep(0.25)
    raise process.fail(f"not {what} after {timeout:.0f}s")
