"""What the real-cluster tier installs into a control plane, how it empties it between tests, and `swarm operator`
run as a process under the operator's ServiceAccount (a token from TokenRequest: every call is checked by RBAC).
"""

from __future__ import annotations

import contextlib
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from swarm.testing.control_plane import REPO, ControlPlane
from swarm.testing.emulator import OperatorProcess  # one runner for both tiers

NS = "swarm"
CORE = "/api/v1"
APPS = "/apis/apps/v1"
SWARM = "/apis/swarm.ai/v1alpha1"
RTX_4090_MIB = 24564  # NVML's total of an RTX 4090 (25,757,220,864 bytes), in MiB
CLAIMS = ("swarm-models", "swarm-data", "swarm-runs")
TLS_SECRETS = ("swarm-specialist-tls", "swarm-primary-tls")


def _volume(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hostPath PersistentVolume and the claim bound to it (the PV controller binds them)."""
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{NS}-{name}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "storageClassName": "manual",
            "hostPath": {"path": f"/tmp/{name}"},
            "claimRef": {"namespace": NS, "name": name},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "volumeName": f"{NS}-{name}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    return volume, claim


def install(plane: ControlPlane) -> None:
    """CRDs, namespace, RBAC (manifests/), the PVCs and TLS Secrets the pod templates mount."""
    plane.kubectl("apply", "-k", str(REPO / "crds"))
    plane.kubectl("apply", "-f", str(REPO / "manifests" / "namespace.yaml"))
    plane.kubectl("apply", "-n", NS, "-f", str(REPO / "manifests" / "rbac.yaml"))
    # What the NVIDIA GPU operator installs; GPU pods run under it (builders.GPU_RUNTIME_CLASS).
    plane.create(
        "/apis/node.k8s.io/v1",
        "runtimeclasses",
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}, "handler": "nvidia"},
    )
    for name in CLAIMS:
        volume, claim = _volume(name)
        plane.create(CORE, "persistentvolumes", volume)
        plane.create(CORE, "persistentvolumeclaims", claim, NS)
    cert, key, ca = (plane.pki[n].read_text() for n in ("server.crt", "server.key", "ca.crt"))
    for name in TLS_SECRETS:
        plane.create(
            CORE,
            "secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": name},
                "stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": ca},
            },
            NS,
        )
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    plane.wait_for(
        lambda: all(
            (plane.get(CORE, "persistentvolumeclaims", n, NS) or {}).get("status", {}).get("phase") == "Bound"
            for n in CLAIMS
        ),
        what="PVCs bound",
    )


def wipe(plane: ControlPlane) -> None:
    """Delete what a test made: jobs and pools (their finalizers dropped: the operator may be gone), their
    children, events and Leases, then, once kwok has finished deleting every pod, the nodes (a pod left on a deleted
    node would wait for the pod garbage collector)."""
    for plural in ("swarmjobs", "specialistpools"):
        for obj in plane.list(SWARM, plural, NS):
            name = obj["metadata"]["name"]
            with contextlib.suppress(urllib.error.HTTPError):
                plane.patch(SWARM, plural, name, {"metadata": {"finalizers": None}}, NS)
                plane.delete(SWARM, plural, name, NS)
    collections = [
        (APPS, "deployments"), (APPS, "replicasets"), (CORE, "services"), (CORE, "pods"), (CORE, "events"),
        ("/apis/coordination.k8s.io/v1", "leases"),  # a killed operator's Lease would hold the next one back
    ]  # fmt: skip
    for api, plural in collections:
        plane.request("DELETE", plane.path(api, plural, NS), {"kind": "DeleteOptions", "gracePeriodSeconds": 0})
    plane.wait_for(
        lambda: not plane.list(CORE, "pods", NS) and not plane.list(SWARM, "specialistpools", NS),
        what="namespace emptied",
    )
    for node in plane.list(CORE, "nodes"):
        plane.delete(CORE, "nodes", node["metadata"]["name"])


def gpu_node(plane: ControlPlane, name: str, *, gpus: int = 1, mib: int = RTX_4090_MIB, **labels: str) -> None:
    """A fake RTX 4090 node: product label, the GPU taint, `nvidia.com/gpu` capacity and the GPU memory the node
    agent would advertise."""
    from swarm.operator.models import GPU_PRODUCT_LABEL, RTX_4090_PRODUCT
    from swarm.operator.nodes import GPU_MEMORY_RESOURCE

    plane.add_gpu_node(
        name,
        labels={GPU_PRODUCT_LABEL: RTX_4090_PRODUCT, **labels},
        capacity={"nvidia.com/gpu": str(gpus), GPU_MEMORY_RESOURCE: str(gpus * mib)},
        taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    )


@dataclass(frozen=True)
class ServiceAccountTarget:
    """What OperatorProcess runs against on the real control plane: a ServiceAccount's kubeconfig, and the folder
    of the operator's log (emulator.OperatorTarget)."""

    kubeconfig: Path
    workdir: Path


def operator_process(
    plane: ControlPlane,
    log_path: Path,
    *,
    namespace: str = NS,
    extra_args: tuple[str, ...] = (),
    **env: str,
) -> OperatorProcess:
    """`swarm operator --namespace NAMESPACE` as a process with that namespace's swarm-operator ServiceAccount token
    (the emulator tier's runner: SIGKILL is a real crash), logging to `log_path`. A short lease by default, so a test
    that kills the leader does not wait 15 s for the next one; no metrics port (two replicas would share it)."""
    target = ServiceAccountTarget(plane.service_account_kubeconfig(namespace, "swarm-operator"), log_path.parent)
    args = extra_args if "--lease-duration" in extra_args else ("--lease-duration", "5", *extra_args)
    return OperatorProcess(
        target,
        namespace,
        resync=1.0,
        retry=0.5,
        extra_env={"SWARM_POD_TEMPLATES": str(REPO / "manifests" / "templates"), **env},
        args=args,
        name=log_path.stem,
    )


def apply_sample(plane: ControlPlane, name: str, **changes: Any) -> dict[str, Any]:
    """A manifests/samples/ file applied with kubectl; `changes` merged into its spec first."""
    doc = yaml.safe_load((REPO / "manifests" / "samples" / name).read_text())
    doc["spec"].update(changes)
    plane.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))
    return doc
