"""Who can reach the sidecar's socket: every UID of the pod; a sidecar that cannot make it says why.

Tests run as root, so the client is run as another UID in a subprocess. Its interpreter must be
reachable by that UID: a Python whose path every user can traverse is used as it is; otherwise
the path is opened (o+x) for the test and every mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_sidecar_api import frames
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.sidecar import SidecarProcess
from tests.support import create_topic

pytestmark = pytest.mark.integration

OTHER_UID = 65534  # nobody: not the sidecar's UID (root here)
REPO = Path(__file__).resolve().parents[2]

CLIENT = """
import json, sys
from kafka_sidecar_client import Producer
producer = Producer({"bootstrap.servers": sys.argv[2]})
errors = []
for n in range(100):
    producer.produce(sys.argv[1], value=b"%d" % n, on_delivery=lambda e, m: e and errors.append(str(e)))
left = producer.flush(30)
print(json.dumps({"left": left, "errors": errors, "counters": producer.emission_counters()}))
"""


def blocked_directories(path: Path) -> list[Path]:
    """The ancestors of ``path`` another UID cannot traverse."""
    return [p for p in path.parents if not os.stat(p).st_mode & stat.S_IXOTH]


@contextlib.contextmanager
def traversable(paths: list[Path]) -> Iterator[None]:
    """Let every UID traverse ``paths`` for the duration; the original modes always come back."""
    saved = {p: stat.S_IMODE(os.stat(p).st_mode) for p in paths}
    try:
        for path, mode in saved.items():
            path.chmod(mode | stat.S_IXOTH)
        yield
    finally:
        for path, mode in saved.items():
            path.chmod(mode)


@pytest.fixture
def other_uid_python() -> Iterator[list[str]]:
    """argv prefix running this test environment's Python as ``OTHER_UID``."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(shutil.which(version, path="/usr/bin:/usr/local/bin") or "/nonexistent")]
    interpreter = next(
        (c for c in candidates if c.exists() and not blocked_directories(c.resolve())),
        Path(sys.executable).resolve(),
    )
    site = Path(sysconfig.get_paths()["purelib"])
    blocked = sorted(
        set(blocked_directories(interpreter.resolve()) + blocked_directories(site / "x"))
    )
    with traversable(blocked):
        yield [str(interpreter)]
    assert blocked_directories(interpreter.resolve()) == blocked  # restored


@pytest.fixture
def world_reachable_dir() -> Iterator[Path]:
    """A directory under /tmp that every UID can traverse (pytest's tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="ks-socket-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class NestedSocketSidecar(SidecarProcess):
    """A sidecar whose socket directory does not exist yet: the sidecar creates it."""

    @property
    def socket_path(self) -> Path:
        return self.workdir / "run" / "sidecar.sock"


def test_client_running_as_another_uid_produces_through_the_sidecar(
    kafka: KafkaCluster, world_reachable_dir: Path, other_uid_python: list[str]
) -> None:
    topic = create_topic(kafka)
    sidecar = NestedSocketSidecar(kafka.bootstrap_servers, world_reachable_dir)
    try:
        sidecar.start()
        assert stat.S_IMODE(sidecar.socket_path.stat().st_mode) == 0o666
        frames_socket = Path(f"{sidecar.socket_path}{frames.SUFFIX}")  # what the client uses
        assert stat.S_IMODE(frames_socket.stat().st_mode) == 0o666
        assert stat.S_IMODE(sidecar.socket_path.parent.stat().st_mode) == 0o755
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(
                [sysconfig.get_paths()["purelib"], str(REPO / "client"), str(REPO / "api")]
            ),
            "KAFKA_SIDECAR_MODE": "sidecar",
            "KAFKA_SIDECAR_ADDRESS": sidecar.address,
            # No fallback: an unreachable socket leaves the events unsent instead of hiding it.
            "KAFKA_SIDECAR_FALLBACK": "none",
            "KAFKA_SIDECAR_RPC_TIMEOUT_MS": "1000",
        }
        proc = subprocess.run(
            [*other_uid_python, "-c", CLIENT, topic, kafka.bootstrap_servers],
            user=OTHER_UID,
            group=OTHER_UID,
            extra_groups=[],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (result["left"], result["errors"]) == (0, [])
        assert result["counters"][topic]["acked"] == 100
        assert result["counters"][topic]["fallback"] == 0
    finally:
        sidecar.stop()


def test_sidecar_on_a_read_only_socket_directory_exits_with_one_clear_line(
    kafka: KafkaCluster, world_reachable_dir: Path
) -> None:
    directory = world_reachable_dir / "ro"
    directory.mkdir()
    listen = f"unix://{directory}/sidecar.sock"
    # A private mount namespace: the read-only bind mount exists only for the sidecar.
    script = (
        f'mount --bind "{directory}" "{directory}" && '
        f'mount -o remount,bind,ro "{directory}" && '
        f'exec "{sys.executable}" -m kafka_sidecar serve'
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env={
            **os.environ,
            "KAFKA_PRODUCER_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_SIDECAR_LISTEN": listen,
            "KAFKA_SIDECAR_METRICS_ADDR": "",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(directory) in lines[0]
    assert "KAFKA_SIDECAR_LISTEN" in lines[0]
    assert "Read-only file system" in lines[0]
    assert "Traceback" not in proc.stderr
