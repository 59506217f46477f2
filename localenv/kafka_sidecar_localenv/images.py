"""Container images for the real node, built from the repository's Dockerfiles with no registry.

The distribution's Docker engine builds them (its own data root, no iptables, no bridge), against a
stand-in for ``python:3.11-slim-bookworm`` made with debootstrap, since no registry is reachable.
Each image is saved as an archive named by the hash of everything that goes into it, so a warm run
rebuilds nothing; the node's containerd imports the archives at every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kafka_sidecar_localenv.install import run, say, step
from kafka_sidecar_localenv.processes import ComponentError, ManagedProcess, wait_until
from kafka_sidecar_localenv.versions import CacheLayout

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim-bookworm"
# Bump when the stand-in's recipe changes: it is part of every image's hash.
BASE_RECIPE = "debootstrap-bookworm-python3.11-r1"
DOCKER = "/usr/bin/docker"  # the client that matches the distribution's daemon
PAUSE_IMAGE = "kafka-sidecar.local/pause:1"
SIDECAR_IMAGE = "ghcr.io/kafka-sidecar/kafka-sidecar:0.1.0"
OPERATOR_IMAGE = "ghcr.io/kafka-sidecar/kafka-sidecar-operator:0.1.0"
SAMPLE_APP_IMAGE = "kafka-sidecar.local/sample-app:1"


@dataclass(frozen=True)
class ImageSpec:
    """One image: its reference (the manifests' own name), Dockerfile and the inputs it copies."""

    ref: str
    dockerfile: str
    inputs: tuple[str, ...]


IMAGES = (
    ImageSpec(
        SIDECAR_IMAGE,
        "Dockerfile.sidecar",
        (".dockerignore", "pyproject.toml", "README.md", "api", "client", "sidecar", "operator"),
    ),
    ImageSpec(
        OPERATOR_IMAGE,
        "Dockerfile.operator",
        (".dockerignore", "pyproject.toml", "README.md", "api", "client", "sidecar", "operator"),
    ),
    ImageSpec(
        SAMPLE_APP_IMAGE,
        "examples/sample-app.Dockerfile",
        (
            "pyproject.toml",
            "README.md",
            "client",
            "sidecar",
            "operator",
            "examples/producer_app.py",
        ),
    ),
)


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in sorted(paths):
        if path.is_dir():
            yield from _files(p for p in path.iterdir() if p.name != "__pycache__")
        elif path.is_file():
            yield path


def content_hash(root: Path, inputs: Iterable[str], *extra: str) -> str:
    """A short hash of every file under ``inputs`` (names and bytes) plus ``extra`` strings."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(item.encode() + b"\0")
    for path in _files(root / name for name in inputs):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def archive_name(ref: str, digest: str) -> str:
    """``ghcr.io/kafka-sidecar/kafka-sidecar:0.1.0`` -> ``kafka-sidecar-0.1.0-<hash>.tar``."""
    name, tag = ref.rsplit("/", 1)[-1].split(":")
    return f"{name}-{tag}-{digest}.tar"


def wanted_archives(layout: CacheLayout) -> dict[str, Path]:
    """Every image the node needs -> the archive that holds the current build of it."""
    pause = layout.kubernetes_binary("pause")
    wanted = {
        PAUSE_IMAGE: layout.images
        / archive_name(PAUSE_IMAGE, content_hash(pause.parent, ["pause"]))
    }
    for spec in IMAGES:
        digest = content_hash(REPO, (spec.dockerfile, *spec.inputs), BASE_RECIPE)
        wanted[spec.ref] = layout.images / archive_name(spec.ref, digest)
    return wanted


def ensure_images(layout: CacheLayout) -> dict[str, Path]:
    """Build the images whose archive is missing; a warm run starts no Docker at all."""
    wanted = wanted_archives(layout)
    missing = {ref: path for ref, path in wanted.items() if not path.is_file()}
    if not missing:
        return wanted
    layout.images.mkdir(parents=True, exist_ok=True)
    with docker_engine(layout) as docker_env:
        for ref, archive in missing.items():
            with step(f"image {ref}: docker build"):
                if ref == PAUSE_IMAGE:
                    _build_pause(layout, docker_env)
                else:
                    spec = next(s for s in IMAGES if s.ref == ref)
                    if not _has_image(BASE_IMAGE, docker_env):
                        _import_base(layout, docker_env)
                    run(
                        [
                            DOCKER,
                            "build",
                            "--network",
                            "host",
                            "-f",
                            spec.dockerfile,
                            "-t",
                            ref,
                            ".",
                        ],
                        cwd=REPO,
                        env={**docker_env, "DOCKER_BUILDKIT": "0"},
                    )
                scratch = archive.with_suffix(".tmp")
                run([DOCKER, "save", "-o", str(scratch), ref], cwd=REPO, env=docker_env)
                scratch.rename(archive)
        # Older builds of the same images; the base stand-in's archive stays.
        prefixes = tuple(archive_name(ref, "").removesuffix(".tar") for ref in wanted)
        for stale in layout.images.glob("*.tar"):
            if stale.name.startswith(prefixes) and stale not in wanted.values():
                stale.unlink()
    return wanted


def _has_image(ref: str, docker_env: dict[str, str]) -> bool:
    probe = [DOCKER, "image", "inspect", ref]
    return subprocess.run(probe, env=docker_env, capture_output=True, check=False).returncode == 0


def _build_pause(layout: CacheLayout, docker_env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as context:
        shutil.copy2(layout.kubernetes_binary("pause"), Path(context) / "pause")
        (Path(context) / "Dockerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        run([DOCKER, "build", "-t", PAUSE_IMAGE, "."], cwd=Path(context), env=docker_env)


def debian_mirror() -> str:
    """The Debian mirror apt already uses here (it may be the only one the machine reaches)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources")]
    sources += Path("/etc/apt/sources.list.d").glob("*.list")
    for source in sources:
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            words = line.split()
            uris = words[1:] if words[:1] in (["URIs:"], ["deb"]) else []
            for uri in uris:
                if uri.startswith("http") and uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def _import_base(layout: CacheLayout, docker_env: dict[str, str]) -> None:
    """The stand-in for python:3.11-slim-bookworm: Debian's own Python 3.11 on a minimal rootfs.

    It differs from the real image: Python is Debian's (in /usr/bin, dist-packages, no setuptools
    preinstalled), and the host's extra CA certificates are trusted so pip inside a build reaches
    PyPI through an intercepting proxy the host trusts (the images stay local).
    """
    archive = layout.images / f"base-{BASE_RECIPE}.tar"
    if not archive.is_file():
        with tempfile.TemporaryDirectory(dir=layout.images) as scratch:
            rootfs = Path(scratch) / "rootfs"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3.11,python3-venv,python3-pip,ca-certificates",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ],
                cwd=Path(scratch),
            )
            extra_cas = rootfs / "usr/local/share/ca-certificates"
            for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                shutil.copy2(cert, extra_cas / cert.name)
            run(["chroot", str(rootfs), "update-ca-certificates"], cwd=Path(scratch))
            (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
            for name, target in (
                ("python", "/usr/bin/python3.11"),
                ("python3", "/usr/bin/python3.11"),
                ("pip", "/usr/bin/pip3"),
                ("pip3", "/usr/bin/pip3"),
            ):
                (rootfs / "usr/local/bin" / name).symlink_to(target)
            shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
            shutil.rmtree(rootfs / "var/cache/apt", ignore_errors=True)
            run(["tar", "-C", str(rootfs), "-cf", str(archive.with_suffix(".tmp")), "."], cwd=REPO)
            archive.with_suffix(".tmp").rename(archive)
    run(
        [
            DOCKER,
            "import",
            "-c",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c",
            "ENV LANG=C.UTF-8",
            "-c",
            'CMD ["python3"]',
            str(archive),
            BASE_IMAGE,
        ],
        cwd=REPO,
        env=docker_env,
    )


@contextmanager
def docker_engine(layout: CacheLayout) -> Iterator[dict[str, str]]:
    """A private dockerd for the duration of a build: its own data root, socket and no networking.

    ``--iptables=false --bridge=none`` keeps it from touching the host's firewall and links; builds
    use the host network. Everything it started stops with it.
    """
    if not Path("/usr/sbin/dockerd").is_file() or not Path(DOCKER).is_file():
        raise ComponentError(
            "building images needs the distribution's docker.io (dockerd and docker): "
            "run `make localenv-install` as root, which installs it with apt"
        )
    cgroups_before = set(Path("/sys/fs/cgroup").glob("*/docker"))
    exec_root = Path(tempfile.mkdtemp(prefix="ks-docker-"))
    socket = exec_root / "docker.sock"
    data_root = layout.images / "docker-data"
    daemon = ManagedProcess(
        name="dockerd",
        argv=[
            "/usr/sbin/dockerd",
            f"--data-root={data_root}",
            f"--exec-root={exec_root / 'exec'}",
            f"--pidfile={exec_root / 'dockerd.pid'}",
            f"--host=unix://{socket}",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver=overlay2",
        ],
        log_path=layout.images / "dockerd.log",
    ).start()
    docker_env = {"DOCKER_HOST": f"unix://{socket}"}
    try:

        def answers() -> bool:
            probe = [DOCKER, "info"]
            env = {**os.environ, **docker_env}
            return subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0

        wait_until(daemon, answers, 60, "answering")
        yield docker_env
    finally:
        daemon.stop(grace=30)
        _unmount_under(exec_root)
        _unmount_under(data_root)
        shutil.rmtree(exec_root, ignore_errors=True)
        for cgroup in set(Path("/sys/fs/cgroup").glob("*/docker")) - cgroups_before:
            with contextlib.suppress(OSError):
                cgroup.rmdir()  # empty once every build container is gone
        say("docker engine stopped")


def _unmount_under(root: Path) -> None:
    """Lazy-unmount whatever is still mounted below ``root`` (deepest first)."""
    prefix = f"{root}/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
