"""A real single-node Kubernetes cluster: the control plane plus controller-manager, scheduler,
kubelet, kube-proxy and containerd, running the repository's own images with no registry.

Host requirements (root, containerd, runc, the CNI plugins, iptables) come from the distribution's
packages. Everything this module changes on the host is undone by ``stop()``: the two bridges it
creates, the sysctls the kubelet and the CNI plugin rewrite, kube-proxy's iptables chains, mounts,
network namespaces and the kubelet's cgroups. Addresses are only those of its own bridges.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kafka_sidecar_localenv.firewall import kube_chains, remove_new_chains
from kafka_sidecar_localenv.images import PAUSE_IMAGE, ensure_images
from kafka_sidecar_localenv.kafka import KafkaCluster
from kafka_sidecar_localenv.kube import KUBECONFIG_TEMPLATE, ControlPlane
from kafka_sidecar_localenv.processes import (
    ComponentError,
    ManagedProcess,
    free_port,
    require_installed,
    terminate,
    wait_until,
)
from kafka_sidecar_localenv.versions import CacheLayout

NODE_NAME = "kafka-sidecar-node"
# Holds the node's address and has no ports: a kubelet refuses a loopback node IP, and kernels
# without the `dummy` link type are common on CI machines.
NODE_BRIDGE = "ksnode0"
POD_BRIDGE = "kscni0"
NODE_IP = "10.77.77.1"
POD_CIDR = "10.244.77.0/24"
SERVICE_CIDR = "10.0.77.0/24"
CNI_BIN = Path("/usr/lib/cni")
# Host commands the node needs, and the Debian package that provides each.
HOST_PACKAGES = {
    "/usr/bin/containerd": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/dockerd": "docker.io",
    "/usr/sbin/debootstrap": "debootstrap",
}
# Host sysctls the kubelet, kube-proxy and the bridge CNI plugin write; restored on stop.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
)


def missing_host_packages() -> list[str]:
    """Debian packages whose commands are absent."""
    return sorted({pkg for path, pkg in HOST_PACKAGES.items() if not Path(path).exists()})


def ensure_host_packages() -> None:
    """Install the node's host packages with apt when root; otherwise say what to do."""
    missing = missing_host_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise ComponentError(
            f"the real node needs root and these packages: {' '.join(missing)}; run as root "
            f"(apt-get install {' '.join(missing)}), or use kind with Docker (docs/install.md)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ComponentError(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}{proc.stderr}")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        with contextlib.suppress(OSError):
            Path("/proc/sys", name).write_text(value + "\n")


def _ip(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ComponentError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ports_of(bridge: str) -> list[str]:
    """The links attached to ``bridge`` (none when it does not exist)."""
    ports = Path("/sys/class/net", bridge, "brif")
    return sorted(p.name for p in ports.iterdir()) if ports.is_dir() else []


def mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first."""
    prefix = f"{root}/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


CONTAINERD_CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Hosts without CAP_SYS_RESOURCE (many VMs) make runc fail to lower the sandbox's
  # oom_score_adj with "can't get final child's PID from pipe: EOF" unless this is set.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"""

CNI_NETWORK = "kafka-sidecar"
CNI_RESULTS = "/var/lib/cni/results"  # libcni's cache; containerd 1.6 cannot move it
# Host folders the node's components create whatever their settings say (the kubelet's device
# plugin socket, libcni's cache, the kubelet's log links, runc's shim sockets): removed on stop
# when they did not exist before.
HOST_DIRS = ("/var/lib/kubelet", "/var/lib/cni", "/var/log/containers", "/run/containerd")


def cni_config(ipam_dir: Path) -> dict[str, object]:
    """The bridge network; address leases kept in the node's own folder, not the host's."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


KUBELET_CONFIG = """apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false            # kubelet >= 1.35 refuses a cgroup v1 host otherwise
cgroupDriver: cgroupfs         # no systemd here; containerd 1.6 cannot report its driver
cgroupRoot: /
containerRuntimeEndpoint: unix://{containerd}
imageServiceEndpoint: unix://{containerd}
address: {node_ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:                # only clients with a certificate of the cluster's CA: the API
  anonymous: {{enabled: false}}  # server (--kubelet-client-certificate), never a pod
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {client_ca}}}
authorization: {{mode: AlwaysAllow}}
makeIPTablesUtilChains: false  # else it adds KUBE-FIREWALL chains to the host's iptables
failSwapOn: false
podLogsDir: {logs}
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100  # the imported images can never be pulled again
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
serializeImagePulls: false
maxPods: 60
"""


@dataclass
class RealNode:
    """A control plane on the node's address, plus the node that runs pods; Kafka beside it."""

    layout: CacheLayout
    workdir: Path
    brokers: int = 1
    plane: ControlPlane | None = None
    kafka: KafkaCluster | None = None
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    created_links: list[str] = field(default_factory=list)
    netns_before: set[str] = field(default_factory=set)
    chains_before: dict[str, list[str]] = field(default_factory=dict)
    kubepods_before: list[str] = field(default_factory=list)
    cni_results_before: list[str] = field(default_factory=list)
    host_dirs_before: list[str] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        assert self.plane is not None
        return self.plane.kubeconfig

    def kubectl_argv(self) -> list[str]:
        """The matching kubectl with this cluster's admin kubeconfig."""
        assert self.plane is not None
        return [str(self.plane.kubectl), f"--kubeconfig={self.kubeconfig}"]

    def kubectl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl against this cluster (never raises; check returncode)."""
        argv = [*self.kubectl_argv(), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    # --- start -----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> RealNode:
        """Bring up the whole cluster; on any failure stop what started and raise with log tails."""
        if os.geteuid() != 0:
            raise ComponentError("the real node needs root (containerd, mounts, bridges, iptables)")
        missing = missing_host_packages()
        if missing:
            raise ComponentError(
                f"missing host packages: {' '.join(missing)} (run `make localenv-install` as root)"
            )
        require_installed(
            *(self.layout.kubernetes_binary(c) for c in ("kubelet", "kube-proxy", "pause"))
        )
        if link_exists(NODE_BRIDGE) or link_exists(POD_BRIDGE):
            raise ComponentError(
                f"bridge {NODE_BRIDGE} or {POD_BRIDGE} already exists: another local environment "
                "is running (`make localenv-down` stops it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.images = ensure_images(self.layout)
        self.sysctls = read_sysctls()
        self.chains_before = kube_chains()
        self.kubepods_before = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods"))
        self.host_dirs_before = [d for d in HOST_DIRS if Path(d).exists()]
        results = Path(CNI_RESULTS)
        self.cni_results_before = sorted(os.listdir(results)) if results.is_dir() else []
        self.netns_before = set(os.listdir("/run/netns")) if Path("/run/netns").is_dir() else set()
        # Both bridges are ours (start() checked neither exists): recorded before they exist, so
        # a failure half-way still removes them. The CNI plugin creates POD_BRIDGE.
        self.created_links += [NODE_BRIDGE, POD_BRIDGE]
        self._save_state()
        _ip("link", "add", NODE_BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
        _ip("link", "set", NODE_BRIDGE, "up")

        self.kafka = KafkaCluster(self.layout, self.workdir / "kafka", self.brokers, host=NODE_IP)
        self.kafka.start(timeout)
        self.plane = ControlPlane(
            self.layout,
            self.workdir / "kubernetes",
            host=NODE_IP,
            service_cidr=SERVICE_CIDR,
            for_node=True,
        )
        self.plane.start(timeout)
        self._start_containerd(timeout)
        self._start_controllers()
        self._start_kubelet(timeout)
        self._start_kube_proxy(timeout)
        self._save_state()

    def _node_kubeconfig(self) -> Path:
        """The kubelet's own identity (system:node:<name>), as the Node authorizer expects."""
        assert self.plane is not None
        assert self.plane.ca is not None
        certs = self.workdir / "kubernetes" / "pki"
        pair = self.plane.ca.issue(
            certs,
            "kubelet",
            common_name=f"system:node:{NODE_NAME}",
            organization="system:nodes",
            client=True,
        )
        path = self.workdir / "kubelet.kubeconfig"
        path.write_text(
            KUBECONFIG_TEMPLATE.format(
                server=self.plane.server, ca=self.plane.ca.pair.cert, cert=pair.cert, key=pair.key
            )
        )
        return path

    def _start_containerd(self, timeout: float) -> None:
        root = self.workdir / "containerd"
        cni_conf = self.workdir / "cni"
        root.mkdir(parents=True, exist_ok=True)
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-kafka-sidecar.conflist").write_text(
            json.dumps(cni_config(self.workdir / "cni" / "ipam"), indent=2)
        )
        config = root / "config.toml"
        config.write_text(
            CONTAINERD_CONFIG.format(
                root=root, pause=PAUSE_IMAGE, cni_bin=CNI_BIN, cni_conf=cni_conf
            )
        )
        process = self._spawn("containerd", ["containerd", "--config", str(config)])
        wait_until(process, lambda: self.ctr("version").returncode == 0, timeout, "answering")
        for ref, archive in self.images.items():
            proc = self.ctr("images", "import", str(archive))
            if proc.returncode != 0:
                raise process.fail(f"importing {ref} failed: {proc.stderr.strip()}")

    def _start_controllers(self) -> None:
        assert self.plane is not None
        assert self.plane.ca is not None
        pki = self.workdir / "kubernetes" / "pki"
        kubeconfig = str(self.plane.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.layout.kubernetes_binary("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={pki / 'service-account.key'}",
                f"--root-ca-file={self.plane.ca.pair.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--controllers=*",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.layout.kubernetes_binary("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
            ],
        )

    def _start_kubelet(self, timeout: float) -> None:
        assert self.plane is not None
        assert self.plane.ca is not None
        config = self.workdir / "kubelet-config.yaml"
        logs = self.workdir / "pod-logs"
        logs.mkdir(parents=True, exist_ok=True)
        config.write_text(
            KUBELET_CONFIG.format(
                containerd=self.containerd_socket,
                node_ip=NODE_IP,
                port=free_port(NODE_IP),
                healthz=free_port(),
                logs=logs,
                client_ca=self.plane.ca.pair.cert,
            )
        )
        process = self._spawn(
            "kubelet",
            [
                str(self.layout.kubernetes_binary("kubelet")),
                f"--config={config}",
                f"--kubeconfig={self._node_kubeconfig()}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "-v=1",
            ],
        )

        def ready() -> bool:
            proc = self.kubectl(
                "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=2s", timeout=10
            )
            return proc.returncode == 0

        wait_until(process, ready, timeout, "Ready (node condition)")

        def default_account() -> bool:
            return self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0

        wait_until(process, default_account, timeout, "serving (default ServiceAccount created)")

    def _start_kube_proxy(self, timeout: float) -> None:
        assert self.plane is not None
        healthz = free_port()
        process = self._spawn(
            "kube-proxy",
            [
                str(self.layout.kubernetes_binary("kube-proxy")),
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                f"--nodeport-addresses={NODE_IP}/32",
                f"--healthz-bind-address=127.0.0.1:{healthz}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                # 0 = leave the host's conntrack sysctls alone
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
            ],
        )

        def healthy() -> bool:
            import urllib.request  # noqa: PLC0415

            url = f"http://127.0.0.1:{healthz}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        wait_until(process, healthy, timeout, "healthy (/healthz)")

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            name=name, argv=argv, log_path=self.workdir / "logs" / f"{name}.log"
        ).start()
        self.processes[name] = process
        self._save_state()
        return process

    def _save_state(self) -> None:
        """What ``stop()`` needs to undo, also from another process (``localenv down``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "node-state.json").write_text(
            json.dumps(
                {
                    "sysctls": self.sysctls,
                    "links": self.created_links,
                    "netns_before": sorted(self.netns_before),
                    "chains_before": self.chains_before,
                    "kubepods_before": self.kubepods_before,
                    "cni_results_before": self.cni_results_before,
                    "host_dirs_before": self.host_dirs_before,
                },
                indent=2,
            )
        )

    # --- facts -----------------------------------------------------------------------------

    def logs(self) -> dict[str, Path]:
        found = {name: p.log_path for name, p in self.processes.items()}
        if self.plane is not None:
            found.update(self.plane.logs())
        if self.kafka is not None:
            found.update(self.kafka.logs())
        return found

    def pids(self) -> list[int]:
        """Every pid, in stopping order: node first, then the API server, etcd, Kafka."""
        order = [
            self.processes.get(n)
            for n in ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager")
        ]
        order += [self.processes.get("containerd")]
        if self.plane is not None:
            order += [self.plane.apiserver, self.plane.etcd]
        if self.kafka is not None:
            order += [n.process for n in self.kafka.nodes]
        return [p.pid for p in order if p is not None and p.pid is not None]

    def describe(self) -> dict[str, object]:
        """The ``kubernetes.node`` section of ``.localenv/state.json``."""
        return {
            "name": NODE_NAME,
            "ip": NODE_IP,
            "pod_cidr": POD_CIDR,
            "service_cidr": SERVICE_CIDR,
            "container_runtime_endpoint": f"unix://{self.containerd_socket}",
            "workdir": str(self.workdir),
            "images": sorted(self.images),
            "logs": {name: str(path) for name, path in self.logs().items()},
        }

    # --- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything and undo every host change; safe twice and after a failed start."""
        kubectl = None
        if self.plane is not None and self.plane.apiserver is not None:
            kubectl = self.kubectl_argv()
        teardown(self.workdir, self.layout, kubectl, self.pids())
        self.processes.clear()


def teardown(
    workdir: Path, layout: CacheLayout, kubectl: list[str] | None, pids: list[int]
) -> None:
    """Stop a node by its pids (in :meth:`RealNode.pids` order) and undo its host changes.

    Used by :meth:`RealNode.stop` and by ``localenv down`` from another process.
    """
    if kubectl is not None:
        # Deleting the pods lets the kubelet tear sandboxes down (CNI DEL, netns removed).
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [*kubectl, "delete", "pods", "--all", "-A", "--grace-period=5", "--timeout=60s"],
                capture_output=True,
                timeout=90,
                check=False,
            )
    socket = workdir / "containerd" / "containerd.sock"
    for pid in pids:
        if socket.exists() and _process_name(pid) == "containerd":
            _remove_containers(socket)
        terminate(pid, grace=20)
    cleanup_host(workdir, layout)


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _remove_containers(socket: Path) -> None:
    """Kill what the kubelet left in containerd, so shims exit and rootfs mounts go."""
    ctr = ["ctr", "-a", str(socket), "-n", "k8s.io"]
    listed = subprocess.run(
        [*ctr, "containers", "ls", "-q"], capture_output=True, text=True, check=False
    )
    for container in listed.stdout.split():
        for args in (
            ["tasks", "kill", "-s", "SIGKILL"],
            ["tasks", "rm", "-f"],
            ["containers", "rm"],
        ):
            subprocess.run([*ctr, *args, container], capture_output=True, check=False)
            time.sleep(0.1)


def kill_leftovers(workdir: Path, kept_cgroups: set[str]) -> None:
    """SIGKILL what an interrupted stop left running: every process in the kubelet's cgroups
    (pods the kubelet never stopped) and our containerd's shims. Their network namespaces and
    veth links go with them."""
    doomed: set[int] = set()
    for controller in Path("/sys/fs/cgroup").glob("*/kubepods"):
        if str(controller) in kept_cgroups:
            continue
        for procs in controller.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                doomed.update(int(pid) for pid in procs.read_text().split())
    socket = str(workdir / "containerd" / "containerd.sock")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
                doomed.add(int(cmdline.parent.name))
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while doomed and time.monotonic() < deadline:
        doomed = {pid for pid in doomed if Path(f"/proc/{pid}").exists()}
        time.sleep(0.1)


def cleanup_host(workdir: Path, layout: CacheLayout) -> None:
    """Undo the node's host changes recorded in ``workdir``: usable after a crash as well."""
    state_file = workdir / "node-state.json"
    if not state_file.exists():
        return  # nothing was changed yet (or it was undone already): touch nothing
    state = json.loads(state_file.read_text())
    for point in mounts_under(workdir):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    before = set(state.get("netns_before", []))
    netns = Path("/run/netns")
    for name in sorted(os.listdir(netns)) if netns.is_dir() else []:
        if name.startswith("cni-") and name not in before:
            subprocess.run(["umount", str(netns / name)], capture_output=True, check=False)
            (netns / name).unlink(missing_ok=True)
    kept = set(state.get("kubepods_before", []))
    kill_leftovers(workdir, kept)
    for controller in Path("/sys/fs/cgroup").glob("*/kubepods"):
        if str(controller) in kept:
            continue
        for directory in sorted(controller.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            controller.rmdir()
    if "chains_before" in state and Path("/usr/sbin/iptables").exists():
        # Not `kube-proxy --cleanup`: that would flush any other kube-proxy's rules on the host.
        remove_new_chains(state["chains_before"])
    results_before = set(state.get("cni_results_before", []))
    for pattern in (f"{CNI_NETWORK}-*", "cni-loopback-*"):  # libcni's per-container cache
        for cached in Path(CNI_RESULTS).glob(pattern):
            if cached.name not in results_before:
                cached.unlink(missing_ok=True)
    logs = Path("/var/log/containers")
    for link in logs.glob("*.log") if logs.is_dir() else []:
        if link.is_symlink() and os.readlink(link).startswith(f"{workdir}/"):
            link.unlink()
    for port in ports_of(POD_BRIDGE):  # pods' veths, if their namespaces outlived the kill
        _ip("link", "del", port, check=False)
    for link in state.get("links", []):
        if link_exists(link):
            _ip("link", "del", link, check=False)
    write_sysctls(state.get("sysctls", {}))
    for folder in HOST_DIRS:
        if folder not in state.get("host_dirs_before", HOST_DIRS):
            shutil.rmtree(folder, ignore_errors=True)
    state_file.unlink(missing_ok=True)
    # The kubelet's root dir holds files owned by many UIDs: remove it here, not in a test's tmp.
    for folder in ("kubelet", "containerd"):
        shutil.rmtree(workdir / folder, ignore_errors=True)


def host_snapshot() -> dict[str, object]:
    """What the node may change on the host; equal before ``start()`` and after ``stop()``."""
    netns = Path("/run/netns")
    return {
        "links": sorted(os.listdir("/sys/class/net")),
        "sysctls": read_sysctls(),
        "iptables": kube_chains(),
        "netns": sorted(os.listdir(netns)) if netns.is_dir() else [],
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")),
        "folders": [d for d in HOST_DIRS if Path(d).exists()],
        "files": sorted(
            str(p)
            for pattern in (
                "/var/lib/kubelet/*",
                f"/var/lib/cni/networks/{CNI_NETWORK}/*",
                "/var/lib/cni/results/*",
                "/var/log/containers/*",
            )
            for p in Path("/").glob(pattern.lstrip("/"))
        ),
        "mounts": sorted(
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "kubelet" in line.split()[4] or "containerd" in line.split()[4]
        ),
    }
