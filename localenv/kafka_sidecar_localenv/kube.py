"""A real Kubernetes control plane: etcd plus kube-apiserver, RBAC on.

On its own (127.0.0.1) it is the pair controller-runtime's envtest runs: pods are stored, not run.
With ``for_node=True`` it listens on the node's address so pods reach it through the ``kubernetes``
Service, and admits pods as a full cluster does; ``node.py`` adds the rest of the cluster.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kafka_sidecar_localenv.processes import (
    ManagedProcess,
    free_port,
    require_installed,
    wait_until,
)
from kafka_sidecar_localenv.versions import KUBERNETES_VERSION, CacheLayout
from kafka_sidecar_operator.certificates import CertificateAuthority, KeyPair, service_account_key

KUBECONFIG_TEMPLATE = """apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: local
  context:
    cluster: local
    user: admin
current-context: local
"""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver rooted at ``workdir``, with an admin kubeconfig."""

    layout: CacheLayout
    workdir: Path
    etcd: ManagedProcess | None = None
    apiserver: ManagedProcess | None = None
    port: int = 0
    ca: CertificateAuthority | None = None
    admin: KeyPair | None = None
    extra_args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    service_cidr: str = "10.0.0.0/24"
    for_node: bool = False

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP: the first address of the service range."""
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self.layout.kubectl

    def start(self, timeout: float = 120.0) -> ControlPlane:
        require_installed(self.layout.etcd_binary, self.layout.kube_apiserver)
        certs = self.workdir / "pki"
        self.ca = CertificateAuthority.create(certs)
        serving = self.ca.issue(
            certs,
            "apiserver",
            common_name="kube-apiserver",
            hosts=(
                "127.0.0.1",
                "localhost",
                self.host,
                self.service_ip,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ),
        )
        self.admin = self.ca.issue(
            certs, "admin", common_name="admin", organization="system:masters", client=True
        )
        sa_key = service_account_key(certs / "service-account.key")

        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.etcd = ManagedProcess(
            name="etcd",
            argv=[
                str(self.layout.etcd_binary),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
            ],
            log_path=self.workdir / "logs" / "etcd.log",
        ).start()
        wait_until(self.etcd, lambda: _http_ok(f"{etcd_url}/health"), timeout, "healthy")

        self.port = free_port(self.host)
        # A bare API server has no controller-manager to create ServiceAccounts, so the plugin
        # would reject every pod; with the node's controllers it stays on, as in any cluster.
        node_args = (
            [
                "--authorization-mode=Node,RBAC",
                "--kubelet-preferred-address-types=InternalIP",
                # The kubelet accepts only clients with a certificate of this CA (pods have none).
                f"--kubelet-client-certificate={self.admin.cert}",
                f"--kubelet-client-key={self.admin.key}",
                "--allow-privileged=false",  # nothing on the node needs it
            ]
            if self.for_node
            else [
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
            ]
        )
        self.apiserver = ManagedProcess(
            name="kube-apiserver",
            argv=[
                str(self.layout.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={self.port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.ca.pair.cert}",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                *node_args,
                *self.extra_args,
            ],
            log_path=self.workdir / "logs" / "kube-apiserver.log",
        ).start()
        self.kubeconfig.write_text(
            KUBECONFIG_TEMPLATE.format(
                server=self.server, ca=self.ca.pair.cert, cert=self.admin.cert, key=self.admin.key
            )
        )
        wait_until(self.apiserver, self._ready, timeout, "ready (/readyz)")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context that trusts the local CA and presents the admin client certificate."""
        assert self.ca is not None
        assert self.admin is not None
        context = ssl.create_default_context(cafile=str(self.ca.pair.cert))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return context

    def _ready(self) -> bool:
        return _http_ok(f"{self.server}/readyz", self.ssl_context())

    def restart_apiserver(self, down_for: float = 0.0, timeout: float = 120.0) -> float:
        """Crash kube-apiserver (SIGKILL) and start it again with the same flags, as a failed
        control-plane host does; returns the seconds until it was ready again."""
        assert self.apiserver is not None
        crashed = self.apiserver
        started = time.monotonic()
        crashed.kill()
        time.sleep(down_for)
        self.apiserver = ManagedProcess(
            name=crashed.name, argv=crashed.argv, log_path=crashed.log_path
        ).start()
        wait_until(self.apiserver, self._ready, timeout, "ready again (/readyz)")
        return time.monotonic() - started

    def stop(self) -> None:
        # The API server first: it would log etcd connection errors for every watch otherwise.
        for process in (self.apiserver, self.etcd):
            if process is not None:
                process.stop()

    def logs(self) -> dict[str, Path]:
        return {
            "etcd": self.workdir / "logs" / "etcd.log",
            "kube-apiserver": self.workdir / "logs" / "kube-apiserver.log",
        }

    def describe(self) -> dict[str, object]:
        """The ``kubernetes`` section of ``.localenv/state.json``."""
        return {
            "version": KUBERNETES_VERSION,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "kubectl": str(self.kubectl),
            "etcd": {"pid": self.etcd.pid if self.etcd else None, "log": str(self.logs()["etcd"])},
            "apiserver": {
                "pid": self.apiserver.pid if self.apiserver else None,
                "log": str(self.logs()["kube-apiserver"]),
            },
        }


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
        return bool(response.status == 200)
