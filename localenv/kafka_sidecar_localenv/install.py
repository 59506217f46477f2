"""Builds or fetches every local-environment component from package registries, once per version.

Kafka's broker jars come from Maven Central through Maven; etcd, kube-apiserver and kubectl are
compiled with Go from the module proxy. Each step writes into a temporary folder and renames it
into place, so an interrupted build never leaves a half-filled cache that later runs would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka_sidecar_localenv.versions import (
    ETCD_VERSION,
    JOLOKIA_VERSION,
    KAFKA_VERSION,
    KUBERNETES_COMMANDS,
    KUBERNETES_VERSION,
    LOG4J_VERSION,
    MAVEN_DEPENDENCY_PLUGIN,
    CacheLayout,
    default_layout,
)

KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.kafka-sidecar.localenv</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <!-- Kafka 4.x logs through SLF4J 1.7: log4j-slf4j-impl binds it, log4j-slf4j2-impl does not -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2_PROPERTIES = """status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.started.name = kafka.server.BrokerServer
logger.started.level = INFO
"""

GO_ENV = {"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}


def say(message: str) -> None:
    """Progress for a human watching a cold build; flushed so `make` shows it at once."""
    print(f"[localenv] {message}", file=sys.stderr, flush=True)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Announce a build step and report how long it took."""
    say(f"{name} ...")
    started = time.monotonic()
    yield
    say(f"{name}: done in {time.monotonic() - started:.0f}s")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a build command; on failure raise with its output, which names the failing module."""
    merged = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=merged, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def build_into(target: Path, build: Callable[[Path], None]) -> None:
    """Build into ``target.tmp`` and rename it to ``target`` only when the build succeeded."""
    scratch = target.with_name(target.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    build(scratch)
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)


def ensure_kafka(layout: CacheLayout) -> None:
    """Resolve the Kafka broker and its logging backend from Maven Central into ``libs/``."""
    if layout.kafka_libs.is_dir() and any(layout.kafka_libs.glob("kafka_2.13-*.jar")):
        return

    def build(scratch: Path) -> None:
        (scratch / "pom.xml").write_text(KAFKA_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        (scratch / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        plugin = f"org.apache.maven.plugins:maven-dependency-plugin:{MAVEN_DEPENDENCY_PLUGIN}"
        run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                "pom.xml",
                f"{plugin}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={scratch / 'libs'}",
            ],
            cwd=scratch,
        )

    with step(f"Kafka {KAFKA_VERSION}: resolving broker jars from Maven Central"):
        build_into(layout.kafka, build)


def ensure_jolokia(layout: CacheLayout) -> None:
    """Fetch Jolokia's JVM agent: each broker serves its JMX metrics over HTTP with it, read
    in milliseconds where a JMX client would start a JVM per read."""
    if layout.jolokia_agent.is_file():
        return

    def build(scratch: Path) -> None:
        plugin = f"org.apache.maven.plugins:maven-dependency-plugin:{MAVEN_DEPENDENCY_PLUGIN}"
        artifact = f"org.jolokia:jolokia-agent-jvm:{JOLOKIA_VERSION}:jar:javaagent"
        run(
            ["mvn", "-B", "-q", f"{plugin}:copy", f"-Dartifact={artifact}", "-DoutputDirectory=."],
            cwd=scratch,
        )
        (scratch / f"jolokia-agent-jvm-{JOLOKIA_VERSION}-javaagent.jar").rename(
            scratch / layout.jolokia_agent.name
        )

    with step(f"Jolokia {JOLOKIA_VERSION}: fetching the JVM agent from Maven Central"):
        build_into(layout.jolokia_agent.parent, build)


def ensure_etcd(layout: CacheLayout) -> None:
    """Compile etcd from ``go.etcd.io/etcd/server/v3`` in a wrapper module of its own.

    A separate module keeps etcd's dependency versions from being raised by kube-apiserver's.
    """
    if layout.etcd_binary.is_file():
        return

    def build(scratch: Path) -> None:
        module = f"go.etcd.io/etcd/server/v3@v{ETCD_VERSION}"
        run(["go", "mod", "init", "example.invalid/etcd-bin"], cwd=scratch, env=GO_ENV)
        (scratch / "tools.go").write_text(
            '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n'
        )
        run(["go", "get", module], cwd=scratch, env=GO_ENV)
        run(["go", "mod", "tidy"], cwd=scratch, env=GO_ENV)
        ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{ETCD_VERSION}"
        run(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                ldflags,
                "-o",
                "bin/etcd",
                "go.etcd.io/etcd/server/v3",
            ],
            cwd=scratch,
            env=GO_ENV,
        )

    with step(f"etcd {ETCD_VERSION}: compiling with Go"):
        build_into(layout.etcd, build)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The staging modules k/k maps to ``./staging/src``; a wrapper module must pin each one."""
    modules = []
    for line in kubernetes_go_mod.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("./staging/src/"):
            modules.append(parts[0])
    return modules


def version_ldflags(version: str) -> str:
    """The ldflags k/k's hack/lib/version.sh sets, so ``/version`` reports the real version."""
    minor = version.split(".")[1]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X '{package}.gitVersion=v{version}'",
            f"-X '{package}.gitMajor=1'",
            f"-X '{package}.gitMinor={minor}'",
            f"-X '{package}.gitTreeState=clean'",
            f"-X '{package}.buildDate=1970-01-01T00:00:00Z'",
        ]
    return " ".join(flags)


def ensure_kubernetes(layout: CacheLayout) -> None:
    """Compile every Kubernetes binary the local environment runs from ``k8s.io/kubernetes``.

    k/k requires its staging modules at v0.0.0 and replaces them with local paths, which a consumer
    cannot see; the wrapper module's replace lines are generated from the go.mod the proxy serves.
    kube-apiserver and kubectl serve every tier; the controller-manager, scheduler, kubelet and
    kube-proxy make the real node the e2e tests and the demo run pods on.
    """
    if all(layout.kubernetes_binary(c).is_file() for c in (*KUBERNETES_COMMANDS, "pause")):
        return
    version = KUBERNETES_VERSION
    staging_version = "v0." + version.split(".", 1)[1]

    def build(scratch: Path) -> None:
        run(["go", "mod", "init", "example.invalid/kubernetes-bins"], cwd=scratch, env=GO_ENV)
        info = json.loads(
            run(
                ["go", "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"],
                cwd=scratch,
                env=GO_ENV,
            )
        )
        for module in staging_modules(Path(info["GoMod"]).read_text()):
            run(
                ["go", "mod", "edit", f"-replace={module}={module}@{staging_version}"],
                cwd=scratch,
                env=GO_ENV,
            )
        run(
            ["go", "mod", "edit", f"-require=k8s.io/kubernetes@v{version}"], cwd=scratch, env=GO_ENV
        )
        imports = "".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"\n' for c in KUBERNETES_COMMANDS)
        (scratch / "tools.go").write_text(
            f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"
        )
        run(["go", "mod", "tidy"], cwd=scratch, env=GO_ENV)
        ldflags = version_ldflags(version)
        for command in KUBERNETES_COMMANDS:
            with step(f"Kubernetes {version}: go build {command}"):
                run(
                    [
                        "go",
                        "build",
                        "-trimpath",
                        "-ldflags",
                        ldflags,
                        "-o",
                        f"bin/{command}",
                        f"k8s.io/kubernetes/cmd/{command}",
                    ],
                    cwd=scratch,
                    env=GO_ENV,
                )
        build_pause(scratch)

    with step(f"Kubernetes {version}: compiling {', '.join(KUBERNETES_COMMANDS)} (cold: ~12 min)"):
        build_into(layout.kubernetes, build)


PAUSE_GO = """// pause: the pod sandbox's process. Sleeps until SIGINT/SIGTERM and reaps orphans.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsig := make(chan os.Signal, 8)
\tsignal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range sig {
\t\tif s != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tvar status syscall.WaitStatus
\t\t\tif pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


def build_pause(scratch: Path) -> None:
    """The sandbox image's one binary: registry.k8s.io/pause cannot be pulled without a registry."""
    source = scratch / "pause-src"
    source.mkdir()
    (source / "main.go").write_text(PAUSE_GO)
    (source / "go.mod").write_text("module example.invalid/pause\n\ngo 1.22\n")
    run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(scratch / "bin" / "pause"),
            ".",
        ],
        cwd=source,
        env=GO_ENV,
    )


def ensure_all(layout: CacheLayout | None = None, node: bool = True) -> CacheLayout:
    """Make sure every component is in the cache; cheap when it already is.

    ``node`` adds the real node's host packages (apt, as root) and the container images.
    """
    layout = layout or default_layout()
    layout.root.mkdir(parents=True, exist_ok=True)
    if node:
        from kafka_sidecar_localenv.node import ensure_host_packages  # noqa: PLC0415 - cycle

        with step("host packages for the real node (containerd, runc, CNI, iptables, docker.io)"):
            ensure_host_packages()
    ensure_kafka(layout)
    ensure_jolokia(layout)
    ensure_etcd(layout)
    ensure_kubernetes(layout)
    if node:
        from kafka_sidecar_localenv.images import ensure_images  # noqa: PLC0415 - cycle

        ensure_images(layout)
    return layout
