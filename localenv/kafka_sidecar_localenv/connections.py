"""Counting a process's TCP connections to the brokers, from /proc (what `ss -p` would show)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ESTABLISHED = "01"


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, PermissionError):
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def with_descendants(pids: Iterable[int]) -> list[int]:
    """The pids and every process below them (forked workers of an app, say)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def broker_connections(pids: Iterable[int], broker_ports: Iterable[int]) -> int:
    """Established TCP connections from ``pids`` to any of ``broker_ports``.

    Each process's own network namespace is read (``/proc/PID/net/tcp``), so this counts the
    processes of a pod on the real node as well as local processes.
    """
    ports = {f"{port:04X}" for port in broker_ports}
    pids = list(pids)
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    counted: set[str] = set()
    for pid in pids:
        for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            for line in lines:
                fields = line.split()
                remote_port = fields[2].rsplit(":", 1)[1]
                if fields[3] == ESTABLISHED and remote_port in ports and fields[9] in inodes:
                    counted.add(fields[9])
    return len(counted)


def container_pids(container_id: str) -> list[int]:
    """Host pids of every process in a container (found by the container id in its cgroup)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if container_id in entry.read_text():
                found.append(int(entry.parent.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def cgroup_cpu_seconds(pid: int, levels_up: int = 0) -> float:
    """CPU time of the cgroup v1 cpuacct group ``pid`` is in, or of an ancestor ``levels_up``
    above it (1 from a container's process: its pod, every container and exited child
    included)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            group = Path(path)
            for _ in range(levels_up):
                group = group.parent
            usage = Path("/sys/fs/cgroup/cpuacct", str(group).lstrip("/"), "cpuacct.usage")
            return int(usage.read_text()) / 1e9
    raise FileNotFoundError(f"process {pid} has no cgroup v1 cpuacct group")
