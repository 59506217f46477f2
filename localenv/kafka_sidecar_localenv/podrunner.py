"""Runs a Pod, as the API server stored it, as local processes: a kubelet for tests and the demo.

Images are ignored (containers run this repository's commands from the dev venv). Each pod gets
a loopback address (127.0.0.x, reported as its podIP) and a temp dir per volume; paths under a
container's volume mounts and the bind-all address 0.0.0.0 in env values are rewritten to those.
Native sidecars (init containers with restartPolicy Always) start first, must pass their startup
probe, and are restarted if they die; stopping is Kubernetes' order: apps, then sidecars.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka_sidecar_localenv.processes import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
_ADDRESSES = itertools.count(10)
StatusWriter = Callable[[str, str, dict[str, Any]], None]


def next_pod_ip() -> str:
    """127.0.0.10, .11, ... (all of 127/8 is loopback on Linux)."""
    n = next(_ADDRESSES)
    return f"127.0.{n // 250}.{n % 250 + 1}"


@dataclass
class Container:
    """One running container: its spec, process and restart count."""

    spec: Mapping[str, Any]
    process: ManagedProcess | None = None
    restarts: int = 0
    probe_failures: int = 0  # consecutive readiness failures

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class LocalPod:
    """A pod's processes, volumes and address; ``start()`` then ``stop()``."""

    pod: Mapping[str, Any]
    workdir: Path
    write_status: StatusWriter | None = None
    ip: str = field(default_factory=next_pod_ip)
    sidecars: list[Container] = field(default_factory=list)
    apps: list[Container] = field(default_factory=list)
    volumes: dict[str, Path] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # sidecars not to restart for now
    _stopping: threading.Event = field(default_factory=threading.Event)
    _volume_root: Path | None = None
    _watcher: threading.Thread | None = None

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def container(self, name: str) -> Container:
        return next(c for c in [*self.sidecars, *self.apps] if c.name == name)

    def pids(self, which: str = "all") -> list[int]:
        group = {"apps": self.apps, "sidecars": self.sidecars}.get(
            which, [*self.sidecars, *self.apps]
        )
        return [
            c.process.pid
            for c in group
            if c.process is not None and c.process.pid is not None and c.process.alive()
        ]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalPod:
        spec = self.pod["spec"]
        # Unix socket paths must stay under 108 bytes: volumes live in a short temp dir.
        self._volume_root = Path(tempfile.mkdtemp(prefix="kspod-"))
        for volume in spec.get("volumes") or []:
            path = self._volume_root / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            self.volumes[volume["name"]] = path
        for init in spec.get("initContainers") or []:
            if init.get("restartPolicy") == "Always":
                sidecar = Container(init)
                self.sidecars.append(sidecar)
                self._launch(sidecar)
                self._await_probe(sidecar, "startupProbe", timeout)
            else:
                done = subprocess.run(
                    self._argv(init), env=self._env(init), cwd=REPO, check=False, timeout=timeout
                )
                if done.returncode != 0:
                    raise RuntimeError(f"init container {init['name']} exited {done.returncode}")
        for spec_container in spec.get("containers") or []:
            app = Container(spec_container)
            self.apps.append(app)
            self._launch(app)
        self.report()
        self._watcher = threading.Thread(
            target=self._watch, name=f"kubelet-{self.name}", daemon=True
        )
        self._watcher.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Apps first (SIGTERM, then SIGKILL after the grace period), then the sidecars."""
        self._stopping.set()
        grace = float(
            timeout
            if timeout is not None
            else self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        )
        deadline = time.monotonic() + grace
        for group in (self.apps, list(reversed(self.sidecars))):
            for container in group:
                if container.process is not None and container.process.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(container.process.pid, signal.SIGTERM)
            for container in group:
                if container.process is not None:
                    container.process.stop(grace=max(0.1, deadline - time.monotonic()))
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._volume_root is not None:
            shutil.rmtree(self._volume_root, ignore_errors=True)

    def kill_container(self, name: str, hold: bool = False) -> None:
        """SIGKILL one container, as an OOM kill would; a native sidecar is restarted unless
        ``hold`` (then ``release()`` lets the restart happen)."""
        if hold:
            self.held.add(name)
        container = self.container(name)
        if container.process is not None:
            container.process.kill()

    def release(self, name: str) -> None:
        self.held.discard(name)

    # -- the kubelet loop ---------------------------------------------------------------------

    def _watch(self) -> None:
        """Restart dead native sidecars (restartPolicy Always) and keep the status current."""
        last_report = 0.0
        while not self._stopping.is_set():
            for sidecar in self.sidecars:
                if sidecar.name in self.held:
                    continue
                if sidecar.process is not None and not sidecar.process.alive():
                    time.sleep(1.0)  # the kubelet's restart back-off, shortened
                    if self._stopping.is_set():
                        return
                    sidecar.restarts += 1
                    self._launch(sidecar)
                    last_report = 0.0
            if time.monotonic() - last_report > 1.0:
                with contextlib.suppress(Exception):
                    self.report()
                last_report = time.monotonic()
            time.sleep(0.2)

    def report(self) -> None:
        """PATCH the pod's status as a kubelet would: Running, podIP, container readiness."""
        if self.write_status is None:
            return
        status = {
            "phase": "Running",
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "initContainerStatuses": [self._container_status(c) for c in self.sidecars],
            "containerStatuses": [self._container_status(c) for c in self.apps],
        }
        self.write_status(self.namespace, self.name, status)

    def _container_status(self, container: Container) -> dict[str, Any]:
        alive = container.process is not None and container.process.alive()
        if alive and self._probe_ok(container, "readinessProbe"):
            container.probe_failures = 0
        else:
            container.probe_failures += 1
        # Like the kubelet: not ready only after failureThreshold (3) probes in a row fail.
        ready = alive and container.probe_failures < 3
        return {
            "name": container.name,
            "ready": ready,
            "started": alive,
            "restartCount": container.restarts,
            "image": str(container.spec.get("image", "")),
            "imageID": "",
            "state": {"running": {}} if alive else {"waiting": {}},
        }

    # -- processes ----------------------------------------------------------------------------

    def _launch(self, container: Container) -> None:
        container.process = ManagedProcess(
            name=f"{self.name}/{container.name}",
            argv=self._argv(container.spec),
            log_path=self.workdir / "logs" / f"{container.name}.log",
            env=self._env(container.spec),
            cwd=REPO,
        ).start()

    def _argv(self, spec: Mapping[str, Any]) -> list[str]:
        argv = [*(spec.get("command") or []), *(spec.get("args") or [])]
        if not argv:
            raise RuntimeError(f"container {spec['name']}: no command (images are not run here)")
        return [self._rewrite(spec, a) for a in argv]

    def _env(self, spec: Mapping[str, Any]) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "HOSTNAME": self.name,
            "PYTHONUNBUFFERED": "1",
        }
        for entry in spec.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = self._rewrite(spec, str(entry["value"]))
        return env

    def _rewrite(self, spec: Mapping[str, Any], value: str) -> str:
        for mount in spec.get("volumeMounts") or []:
            host = self.volumes.get(mount["name"])
            if host is not None:
                value = value.replace(mount["mountPath"], str(host))
        return value.replace("0.0.0.0", self.ip)  # noqa: S104 - the pod's own address instead

    def _probe_url(self, container: Container, probe_name: str) -> str | None:
        probe = container.spec.get(probe_name) or {}
        http = probe.get("httpGet")
        if not http:
            return None
        port = http["port"]
        if isinstance(port, str):
            port = next(
                p["containerPort"]
                for p in container.spec.get("ports") or []
                if p.get("name") == port
            )
        return f"http://{self.ip}:{port}{http.get('path', '/')}"

    def _probe_ok(self, container: Container, probe_name: str) -> bool:
        url = self._probe_url(container, probe_name)
        if url is None:
            return True
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                return bool(200 <= response.status < 400)
        except OSError:
            return False

    def _await_probe(self, container: Container, probe_name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._probe_ok(container, probe_name):
            assert container.process is not None
            if not container.process.alive() or time.monotonic() > deadline:
                raise container.process.fail(f"{probe_name} never passed")
            time.sleep(0.1)
