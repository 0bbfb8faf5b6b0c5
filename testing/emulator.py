"""An in-process Kubernetes API for the operator tests and the operator benchmark (swarm.bench.operator): kmock's
KubernetesEmulator plus the server-side behaviour kopf and the operator rely on, a background thread to serve it, a
runner for the operator process, and factories for the objects tests and the benchmark create.

Added on top of kmock (which stores objects as plain JSON and merge-patches them):
metadata.uid / creationTimestamp / resourceVersion / generation (bumped on spec changes), generateName, the
status subresource (status writes only via /status), metadata.resourceVersion in a patch as a precondition (409
Conflict when it is not the object's: what the Lease's optimistic concurrency relies on), and fault injection:
holding matching requests until released (to kill the operator mid-reconcile) and answering 409 Conflict to the
next N matching requests.
Lookups are by key and lists honour equality labelSelectors. Not emulated: garbage collection by owner
references, controllers (Deployments create no pods and report no readyReplicas; tests set pod phases, container
termination messages and Deployment status themselves, through the status subresource), the scheduler, the
kubelet, admission/CRD validation (tests validate CRs with `crdgen.validate_resource`).
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import attrs
import kmock
import yaml

from swarm.operator.builders import custom_resource
from swarm.operator.kube import DEPLOYMENTS, JOBS, NODES, PODS, POOLS, SERVICES, Resource
from swarm.operator.models import API_VERSION, GPU_PRODUCT_LABEL, JOB, POOL, RTX_4090_PRODUCT
from swarm.operator.nodes import GPU_MEMORY_ANNOTATION, GPU_MEMORY_RESOURCE

Predicate = Callable[[kmock.Request], bool]
RTX_4090_TOTAL = 25757220864  # bytes, as NVML reports an RTX 4090
PARAMS_120M = 120_000_000


# ---------------------------------------------------------------------------------------------- object factories
def gpu_node(name: str, total: int | None = RTX_4090_TOTAL, gpus: int = 1) -> dict[str, Any]:
    """A labelled, Ready RTX 4090 node (32 CPUs, 256 GiB) with the agent's reading and the GPU memory it
    advertises; `total=None` gives a non-GPU node without label, reading or GPU memory."""
    meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/hostname": name}}
    allocatable = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    if total is not None:
        reading = {"source": "nvml", "gpus": [{"index": i, "total": total, "free": total} for i in range(gpus)]}
        meta["labels"][GPU_PRODUCT_LABEL] = RTX_4090_PRODUCT
        meta["annotations"] = {GPU_MEMORY_ANNOTATION: json.dumps(reading)}
        allocatable[GPU_MEMORY_RESOURCE] = str(gpus * (total // 1024**2))
    status = {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        "capacity": allocatable,
        "allocatable": allocatable,
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {}, "status": status}


def specialist(name: str, params: int = PARAMS_120M, dtype: str = "bfloat16") -> dict[str, Any]:
    return {"name": name, "domain": f"{name} labels", "model": "/models/specialists", "dtype": dtype, "params": params}


def pool_body(
    name: str = "pool",
    names: tuple[str, ...] = ("a", "b", "c"),
    warm: tuple[str, ...] = ("a",),
    namespace: str = "swarm",
    **extra: Any,
) -> dict[str, Any]:
    return custom_resource(
        "SpecialistPool",
        name,
        namespace,
        {"specialists": [specialist(n) for n in names], "warm": list(warm), "idleTimeoutSeconds": 0, **extra},
    )


def job_body(
    name: str = "job", pool: str = "pool", specialists: tuple[str, ...] = ("b",), namespace: str = "swarm", **extra: Any
) -> dict[str, Any]:
    return custom_resource(
        "SwarmJob",
        name,
        namespace,
        {"mode": "train", "poolRef": pool, "data": "/data/sotab", "specialists": list(specialists), **extra},
    )


_RESOURCES = {
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True, subresources={"status"}),
    "v1/nodes": kmock.ResourceInfo(kind="Node", namespaced=False, subresources={"status"}),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", namespaced=True, subresources={"status", "scale"}),
    "coordination.k8s.io/v1/leases": kmock.ResourceInfo(kind="Lease", namespaced=True),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(kind="PodDisruptionBudget", namespaced=True),
    f"{API_VERSION}/{POOL.plural}": kmock.ResourceInfo(kind=POOL.kind, namespaced=True, subresources={"status"}),
    f"{API_VERSION}/{JOB.plural}": kmock.ResourceInfo(kind=JOB.kind, namespaced=True, subresources={"status"}),
}
_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(base.get(key), value)
    return out


@attrs.define(kw_only=True)
class SwarmEmulator(kmock.KubernetesEmulator):
    _revision: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)
    _holds: list[tuple[Predicate, asyncio.Event]] = attrs.field(factory=list, init=False)
    _conflicts: list[list[Any]] = attrs.field(factory=list, init=False)
    seen: list[kmock.Request] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in _RESOURCES.items():
            info.verbs = set(_VERBS)
            self.resources[key] = info

    def hold(self, predicate: Predicate) -> asyncio.Event:
        """Matching requests wait (unanswered) until the returned event is set."""
        event = asyncio.Event()
        self._holds.append((predicate, event))
        return event

    def conflict(self, predicate: Predicate, times: int) -> None:
        self._conflicts.append([predicate, times])

    async def _handle(self, request: kmock.Request) -> Any:
        self.seen.append(request)
        # kmock's DSL matches each request against its whole request history (for slicing like `[:3]`), which
        # is quadratic over a long run; this emulator uses no DSL reactions, so only the current one is kept.
        del self._requests[:-1]
        for predicate, event in list(self._holds):
            if predicate(request):
                await event.wait()
        for entry in self._conflicts:
            if entry[1] > 0 and entry[0](request):
                entry[1] -= 1
                raise kmock.KubernetesError(
                    status=409,
                    reason="Conflict",
                    message="the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._on_create(request)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._on_update(request)
        return await super()._handle(request)

    def _on_create(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if request.namespace and not meta.get("namespace") and self._namespaced(request):
            meta["namespace"] = request.namespace
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._revision)),
            generation=1,
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        if self._has_status(request):
            request.data.pop("status", None)

    def _on_update(self, request: kmock.Request) -> None:
        if request.resource is None or request.name is None:
            return  # kmock answers 404
        key = (request.resource, request.namespace if self._namespaced(request) else None, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        current = self.objects[key].raw
        data = dict(request.data)
        if request.subresource == "status":
            data = {"status": data.get("status")}
        elif self._has_status(request):
            data.pop("status", None)
        meta = data.setdefault("metadata", {})
        expected = meta.get("resourceVersion")
        if expected is not None and expected != current["metadata"].get("resourceVersion"):
            raise kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified")
        for immutable in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            meta.pop(immutable, None)
        if "spec" in data and _merge(current.get("spec"), data["spec"]) != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = str(next(self._revision))
        request.data.clear()
        request.data.update(data)

    # kmock finds objects by scanning all of them per request and ignores labelSelector; at the benchmark's
    # scale (thousands of objects) that dominates, so objects are looked up by key and lists are filtered.
    def _key(self, request: kmock.Request, name: str | None = None, namespace: str | None = None) -> Any:
        ns = (request.namespace or namespace) if self._namespaced(request) else None
        return (request.resource, ns, name or request.name)

    def _found(self, key: Any) -> Any:
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return self.objects[key]

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        async with self._lock:
            return self._found(self._key(request)).raw

    async def _serve_create(self, request: kmock.Request) -> Any:
        meta = request.data.get("metadata", {})
        async with self._lock:
            return self._found(self._key(request, meta.get("name"), meta.get("namespace"))).last.raw

    async def _serve_update(self, request: kmock.Request) -> Any:
        async with self._lock:
            return self.objects[self._key(request)].last.raw

    _serve_delete = _serve_update

    async def _serve_list(self, request: kmock.Request) -> Any:
        if request.resource not in self.resources:
            raise kmock.KubernetesResourceNotFoundError()
        terms = [t.split("=", 1) for t in request.params.get("labelSelector", "").split(",") if "=" in t]
        async with self._lock:
            items = [
                obj.raw
                for (res, ns, _), obj in self.objects.items()
                if res == request.resource
                and not obj.deleted
                and (request.namespace is None or ns == request.namespace)
                and all(obj.raw.get("metadata", {}).get("labels", {}).get(k) == v for k, v in terms)
            ]
        return {"metadata": {"resourceVersion": "..."}, "items": items}

    def _info(self, request: kmock.Request) -> kmock.ResourceInfo | None:
        """What the emulator knows of the request's resource (None: a resource it was not told of)."""
        if request.resource is None or request.resource not in self.resources:
            return None
        return self.resources[request.resource]

    def _namespaced(self, request: kmock.Request) -> bool:
        info = self._info(request)
        return info is None or info.namespaced is not False

    def _has_status(self, request: kmock.Request) -> bool:
        info = self._info(request)
        return info is not None and "status" in info.subresources


class EmulatedCluster:
    """Runs a SwarmEmulator on 127.0.0.1 in a background thread; a blocking client API for tests."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.emulator: SwarmEmulator | None = None
        self._server: kmock.Server | None = None
        self.kubeconfig = self.workdir / "kubeconfig.yaml"
        self._controller: asyncio.Task[None] | None = None

    def __enter__(self) -> EmulatedCluster:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    async def _start(self) -> None:
        self.emulator = SwarmEmulator()
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "kmock",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "kmock", "user": {}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                }
            )
        )

    async def _stop(self) -> None:
        assert self._server is not None and self.emulator is not None
        if self._controller is not None:
            self._controller.cancel()
        await self._server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def ready_deployments(self, interval: float = 0.05) -> None:
        """From now on, a minimal Deployment controller: every Deployment reports all its replicas ready (what a
        test that is not about readiness needs for a trainer pod to be created). Off by default."""

        async def control() -> None:
            while True:
                for deployment in (await self._call("GET", DEPLOYMENTS.path()))["items"]:
                    want = int(deployment["spec"].get("replicas", 1))
                    if (deployment.get("status") or {}).get("readyReplicas") != want:
                        meta = deployment["metadata"]
                        body = {"status": {"replicas": want, "readyReplicas": want}}
                        path = DEPLOYMENTS.path(meta["namespace"], meta["name"], "status")
                        await self._call("PATCH", path, body, "application/merge-patch+json")
                await asyncio.sleep(interval)

        async def start() -> None:
            if self._controller is None:
                self._controller = asyncio.ensure_future(control())

        self.run(start())

    # ------------------------------------------------------------------ client side, over HTTP
    async def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        assert self._server is not None
        async with self._server.client.request(method, path, json=body, headers={"Content-Type": content_type}) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                if resp.status == 404:
                    return None
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data.get('message')}")
            return data

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.run(self._call("GET", res.path(namespace, name)))

    def list(self, res: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.run(self._call("GET", res.path(namespace)))["items"]

    def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Create `body`; a Node's status (readiness, allocatable) is then written through its status subresource,
        as its kubelet and device plugins would."""
        created = self.run(self._call("POST", res.path(body["metadata"].get("namespace")), body))
        if res == NODES and body.get("status"):
            created = self.patch(NODES, None, body["metadata"]["name"], {"status": body["status"]}, status=True)
        return created

    def patch(
        self, res: Resource, namespace: str | None, name: str, patch: dict[str, Any], status: bool = False
    ) -> dict[str, Any]:
        return self.run(
            self._call(
                "PATCH",
                res.path(namespace, name, "status" if status else None),
                patch,
                "application/merge-patch+json",
            )
        )

    def delete(self, res: Resource, namespace: str | None, name: str) -> Any:
        return self.run(self._call("DELETE", res.path(namespace, name)))

    def hold(self, predicate: Predicate) -> Callable[[], None]:
        """Hold matching requests; returns a function releasing them."""
        emulator = self.emulator
        assert emulator is not None
        event = self.run(self._in_loop(lambda: emulator.hold(predicate)))

        def release() -> None:
            self.loop.call_soon_threadsafe(event.set)

        return release

    def conflict(self, predicate: Predicate, times: int) -> None:
        emulator = self.emulator
        assert emulator is not None
        self.run(self._in_loop(lambda: emulator.conflict(predicate, times)))

    def requests(self, predicate: Predicate) -> builtins.list[kmock.Request]:
        emulator = self.emulator
        assert emulator is not None
        return self.run(self._in_loop(lambda: [r for r in emulator.seen if predicate(r)]))

    @staticmethod
    async def _in_loop(fn: Callable[[], Any]) -> Any:
        return fn()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 20, interval: float = 0.05, what: str = "") -> Any:
    """Poll until `check()` is truthy; its last value is in the error if it never is."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (KeyError, TypeError, IndexError) as exc:  # a partially built status
            value = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}: last value {value!r}")


class OperatorTarget(Protocol):
    """What OperatorProcess runs against: a kubeconfig for the API, and a folder for the operator's log (an
    EmulatedCluster, or the real control plane's ServiceAccount kubeconfig in swarm.testing.operator_process)."""

    @property
    def kubeconfig(self) -> Path: ...

    @property
    def workdir(self) -> Path: ...


class OperatorProcess:
    """`swarm operator` as a real subprocess against the emulator or a real API (SIGKILL is a real crash)."""

    def __init__(
        self,
        cluster: OperatorTarget,
        namespace: str,
        *,
        resync: float = 1.0,
        retry: float = 0.5,
        extra_env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        metrics_port: int = 0,
        name: str = "operator",
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.args = (*args, "--metrics-port", str(metrics_port))
        self.metrics_port = metrics_port
        self.log_path = cluster.workdir / f"{name}.log"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "SWARM_RESYNC_SECONDS": str(resync),
            "SWARM_RETRY_SECONDS": str(retry),
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        command = [sys.executable, "-m", "swarm.operator.commands", "operator", "--namespace", self.namespace]
        command += self.args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def http_get(self, path: str) -> tuple[int, str]:
        """GET `path` from the process's metrics/probe endpoints: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:  # not listening (yet)
            return 0, str(exc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "DEPLOYMENTS",
    "JOBS",
    "NODES",
    "PODS",
    "POOLS",
    "SERVICES",
    "EmulatedCluster",
    "OperatorProcess",
    "SwarmEmulator",
    "free_port",
    "wait_for",
]
