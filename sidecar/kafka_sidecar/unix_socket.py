"""The sidecar's Unix socket: a directory it can write, and a socket every UID in the pod can use.

App containers run as any UID (restricted Pod Security picks them), so the socket is made
read-write for all after the bind: the pod boundary is the access control, as for a loopback port.
"""

from __future__ import annotations

import os
from pathlib import Path

from kafka_sidecar.config import socket_path

SOCKET_MODE = 0o666
"""Any UID may connect; connecting to a Unix socket needs write permission on it."""

DIRECTORY_MODE = 0o755
"""For a directory the sidecar creates: any UID may reach the socket, only the sidecar writes."""

EXIT_SOCKET_UNUSABLE = 3
"""The exit code when the socket cannot be created (2 is a configuration error)."""


class SocketError(OSError):
    """The socket cannot be created where ``KAFKA_SIDECAR_LISTEN`` says; the message says why."""


def prepare(listen: str) -> Path:
    """Create the socket's directory if needed and remove a socket a killed predecessor left.

    Checked before gRPC binds, so an unwritable directory (a read-only root filesystem without
    the emptyDir mounted) is one clear line instead of a bind failure deep inside gRPC.
    """
    path = Path(socket_path(listen))
    directory = path.parent
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True)
            directory.chmod(DIRECTORY_MODE)  # not the umask's choice
        probe = directory / f".kafka-sidecar-{os.getpid()}"  # what bind() will need: a new entry
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
        path.unlink(missing_ok=True)
    except OSError as error:
        raise unusable(listen, directory, error.strerror or str(error)) from None
    return path


def open_to_all_uids(listen: str) -> None:
    """After the bind: read-write for every UID of the pod."""
    path = Path(socket_path(listen))
    try:
        path.chmod(SOCKET_MODE)
    except OSError as error:
        raise unusable(listen, path.parent, error.strerror or str(error)) from None


def unusable(listen: str, directory: Path, reason: str) -> SocketError:
    return SocketError(
        f"cannot create the gRPC socket in {directory}: {reason} "
        f"(KAFKA_SIDECAR_LISTEN={listen}; mount a writable emptyDir there)"
    )
