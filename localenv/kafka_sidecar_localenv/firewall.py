"""Undoing what the node's components add to the host's iptables (``KUBE-*`` chains).

kube-proxy's ``--cleanup`` removes its own rules but not the kubelet's ``KUBE-FIREWALL`` and
friends; the chains that were not there before ``up`` are removed here, with every rule that
jumps to them, for IPv4 and IPv6.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

BINARIES = ("iptables", "ip6tables")
PREFIX = "KUBE-"


def _save(binary: str) -> list[str]:
    if shutil.which(f"{binary}-save") is None:
        return []
    proc = subprocess.run([f"{binary}-save"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()


def parse_chains(lines: list[str]) -> set[str]:
    """``table/chain`` for every ``KUBE-*`` chain in ``iptables-save`` output."""
    found, table = set(), ""
    for line in lines:
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line[1:].startswith(PREFIX):
            found.add(f"{table}/{line[1:].split()[0]}")
    return found


def kube_chains() -> dict[str, list[str]]:
    """The ``KUBE-*`` chains present now, per binary: what ``remove_new_chains`` keeps."""
    return {binary: sorted(parse_chains(_save(binary))) for binary in BINARIES}


def removal_commands(lines: list[str], keep: set[str]) -> list[list[str]]:
    """The commands that delete every new ``KUBE-*`` chain and each rule jumping to one."""
    new = parse_chains(lines) - keep
    deletes: list[list[str]] = []
    table = ""
    for line in lines:
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            words = shlex.split(line)
            chain = words[1]
            target = words[words.index("-j") + 1] if "-j" in words else ""
            if f"{table}/{chain}" not in new and f"{table}/{target}" in new:
                deletes.append(["-t", table, "-D", *words[1:]])
    for item in sorted(new):
        table, chain = item.split("/", 1)
        deletes.append(["-t", table, "-F", chain])
    for item in sorted(new):
        table, chain = item.split("/", 1)
        deletes.append(["-t", table, "-X", chain])
    return deletes


def remove_new_chains(before: dict[str, list[str]]) -> None:
    """Remove the ``KUBE-*`` chains that were not in ``before`` (a :func:`kube_chains` result)."""
    for binary in BINARIES:
        lines = _save(binary)
        for args in removal_commands(lines, set(before.get(binary, []))):
            subprocess.run([binary, *args], capture_output=True, check=False)
