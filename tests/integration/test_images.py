"""The images' install steps, run as the Dockerfiles run them (no Docker engine here): build the
wheel, install it with its extra into a fresh venv, start the entrypoint and see it serve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.kube import ControlPlane
from kafka_sidecar_localenv.operator import OperatorProcess
from kafka_sidecar_localenv.sidecar import SidecarProcess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent.parent


def dockerfile_install(dockerfile: str) -> str:
    """The extra the Dockerfile's final stage installs ("[sidecar]" or "[operator]")."""
    text = (ROOT / dockerfile).read_text()
    return "sidecar" if "[sidecar]" in text else "operator"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("kafka_sidecar-*.whl")
    return found


def image_venv(wheel: Path, extra: str, directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run(
        [str(directory / "bin" / "pip"), "install", "--quiet", f"{wheel}[{extra}]"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return directory


def size_mib(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 2**20


@pytest.fixture(scope="module")
def sidecar_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_venv(
        wheel, dockerfile_install("Dockerfile.sidecar"), tmp_path_factory.mktemp("sidecar-image")
    )


def test_sidecar_image_install_serves_and_carries_no_operator_dependencies(
    sidecar_venv: Path, kafka: KafkaCluster, tmp_path: Path
) -> None:
    site = next((sidecar_venv / "lib").glob("python*/site-packages"))
    assert not (site / "kopf").exists()
    assert not (site / "kubernetes").exists()
    sidecar = SidecarProcess(kafka.bootstrap_servers, tmp_path)
    sidecar_bin = sidecar_venv / "bin"
    # The image's entrypoint: kafka-sidecar serve, from the image's own environment.
    sidecar.env = {"PATH": f"{sidecar_bin}:/usr/bin:/bin"}
    started = sidecar.start(command=[str(sidecar_bin / "kafka-sidecar"), "serve"])
    try:
        assert started.metrics()["kafka_sidecar_ready"] == 1.0
    finally:
        started.stop()
    print(f"sidecar image environment: {size_mib(sidecar_venv):.0f} MiB")


def test_operator_image_install_serves(
    wheel: Path,
    control_plane: ControlPlane,
    crd_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    venv = image_venv(
        wheel, dockerfile_install("Dockerfile.operator"), tmp_path_factory.mktemp("operator-image")
    )
    operator = OperatorProcess(
        control_plane.kubeconfig,
        tmp_path,
        env={"KAFKA_SIDECAR_OPERATOR_WEBHOOK_NAME": "image-test"},
    )
    operator.start(command=[str(venv / "bin" / "kafka-sidecar-operator"), "run", "--local"])
    try:
        assert "kafka_sidecar_operator_injections" in operator.metrics()
    finally:
        operator.stop()
    print(f"operator image environment: {size_mib(venv):.0f} MiB")
