"""The operator as a cluster runs it: an image UID with no passwd entry, several replicas, hostile
pods and endpoints — against the real kube-apiserver."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from tests.support import kubectl, unique_name

pytestmark = pytest.mark.integration

IMAGE_UID = 65532  # the operator image's user, which has no passwd entry
LOGIN_VARIABLES = ("USER", "LOGNAME", "LNAME", "USERNAME")


@contextlib.contextmanager
def traversable_by_others(paths: list[Path]) -> Iterator[None]:
    """Let other UIDs traverse (not list) every directory above ``paths``; restore the modes after.

    The interpreter may live under a 0700 home; a process of the image's UID must reach it.
    """
    changed: dict[Path, int] = {}
    try:
        for path in paths:
            for directory in [*reversed(path.parents)]:
                mode = stat.S_IMODE(directory.stat().st_mode)
                if directory not in changed and not mode & stat.S_IXOTH:
                    changed[directory] = mode
                    directory.chmod(mode | stat.S_IXOTH)
        yield
    finally:
        for directory, mode in changed.items():
            directory.chmod(mode)


@pytest.fixture
def image_uid_home(control_plane: ControlPlane) -> Iterator[Path]:
    """A directory the image's UID owns, holding a self-contained copy of the kubeconfig."""
    with pytest.raises(KeyError):
        pwd.getpwuid(IMAGE_UID)  # the point of the test: no passwd entry
    home = Path(tempfile.mkdtemp(prefix="kafka-sidecar-uid-"))
    flat = kubectl(control_plane, "config", "view", "--raw", "--flatten").stdout
    (home / "kubeconfig").write_text(flat)
    for path in (home, home / "kubeconfig"):
        os.chown(path, IMAGE_UID, IMAGE_UID)
    (home / "kubeconfig").chmod(0o600)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def uids_of(pid: int) -> set[int]:
    """Real, effective, saved and filesystem UIDs of a running process."""
    line = next(
        row
        for row in Path(f"/proc/{pid}/status").read_text().splitlines()
        if row.startswith("Uid:")
    )
    return {int(uid) for uid in line.split()[1:]}


def test_operator_starts_as_a_uid_without_a_passwd_entry_and_no_login_variables(
    crd_installed: None, image_uid_home: Path, tmp_path: Path
) -> None:
    interpreter = Path(sys.executable)
    process = OperatorProcess(
        image_uid_home / "kubeconfig",
        tmp_path / "operator",
        env={"KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": unique_name("kafka-sidecar-uid")},
    )
    unset = [arg for name in LOGIN_VARIABLES for arg in ("-u", name)]
    command = [
        "env",
        *unset,
        "setpriv",
        f"--reuid={IMAGE_UID}",
        f"--regid={IMAGE_UID}",
        "--clear-groups",
        str(interpreter),
        "-m",
        "kafka_sidecar_operator",
        "run",
        "--local",
    ]
    with traversable_by_others([interpreter.resolve(), Path(sys.prefix) / "lib"]):
        try:
            process.start(command=command)
            assert uids_of(process.pid) == {IMAGE_UID}
            assert "getpwuid" not in (process.workdir / "operator.log").read_text()
        finally:
            process.stop()
