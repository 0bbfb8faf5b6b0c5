"""Pure builders of the Kubernetes objects the operator owns: names, labels, owner references, the specialist
Deployment + Service, and the primary trainer Pod. Everything returns plain dicts; nothing here talks to the API.

Pod templates (securityContext, resources, volumes) come from the `swarm-pod-templates` ConfigMap mounted into the
operator (manifests/templates/), or from the built-in defaults below; builders only fill in what is per-object.
The device a pod's command runs on follows its template: `--device cuda` for a GPU template (runtimeClassName
`nvidia`, or a request of `nvidia.com/gpu`), else `--device cpu`.

GPU memory is a scheduler-enforced budget: a GPU pod requests its resident bytes, in MiB, of the extended resource
`swarm.ai/gpu-memory-mib` that the node agent advertises on its node (budget.GPU_MEMORY_RESOURCE), so the scheduler
itself refuses to overcommit a node's GPU memory, whichever pool or namespace asks. The default templates claim no
`nvidia.com/gpu` (a whole-device claim would make a GPU exclusive to one pod); they run under the `nvidia`
RuntimeClass, and a placed specialist or trainer is pinned to the node and GPU its pool planned (hostname node
selector, NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES: `pin_gpu`), so the plan and the binding agree and the
runtime exposes exactly that GPU (the NVIDIA container toolkit exposes none where NVIDIA_VISIBLE_DEVICES is unset).

A trainer runs user `extraArgs` after the operator's own flags: none may repeat one (`reserved_flags`), and a job's
output claim, mounted read-write, is never a claim the templates mount (`template_claims`: the served models).

Transport security: the default templates mount a TLS Secret (cert-manager layout: tls.crt, tls.key, ca.crt) at
TLS_MOUNT and point `SWARM_TLS_DIR` at it, so specialists serve mTLS and trainer (primary) pods present their client
certificate: `swarm-specialist-tls` for specialists, `swarm-primary-tls` for trainers (manifests/tls/ issues both
with cert-manager). A specialist also serves plaintext gRPC health, alone, on HEALTH_PORT (kubelet gRPC probes speak
no TLS); its readiness, liveness and startup probes ask there (`specialist_probes`: the startup probe allows
STARTUP_SECONDS for a model to load, after which liveness restarts a server that stops answering for about a minute;
readiness takes it out of its Service). A trainer pod serves no health port (a batch command: `swarm release`,
`eval`, ...), so it has no probes. manifests/networkpolicy.yaml lets only trainer and annotation pods reach the
specialists' gRPC port.

Priority: a pool's `priorityClassName` goes on all of its specialist pods (warm or not: a template that changed with
the state would restart the pod), a SwarmJob's on its trainer pod; unset, the template's (if any) stays.

Disruption budgets (issue #31): every specialist that is warm or held by a running job, and is scaled up, gets a
PodDisruptionBudget of its own (`specialist_pdb`: the Deployment's name, owned by the pool, so garbage collection
removes it with the pool) with minAvailable 1, so a voluntary eviction (`kubectl drain`, the cluster autoscaler)
never takes down its one replica. It does not block maintenance for long: a drain cordons the node first, and the
pool's planner re-places a warm specialist off a cordoned node at once (pool.plan), which deletes the old pod
through its Deployment (a deletion, which no budget blocks); the drain goes on as soon as that pod is gone. What a
running job holds and is ready stays on a cordoned node until the job finishes (moving it would restart it under
the trainer), and the job's trainer pod gets a budget of its own (`trainer_pdb`, while the job runs): a drain waits
for the job, as it would for any PDB-protected workload, instead of killing its trainer. A specialist that is only
requested, idle-kept or over budget gets none (the planner moves or drops it anyway). The budgets set
unhealthyPodEvictionPolicy AlwaysAllow: a pod that is not ready (loading, crash-looping, unschedulable) never blocks
a drain. The platform overrides it by setting the pool's `podDisruptionBudgets: false` (its budgets are deleted),
by finishing or deleting the job, or with `kubectl drain --disable-eviction` (deletes pods, ignoring budgets).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from swarm.operator import budget
from swarm.operator.models import (
    API_VERSION,
    JOB,
    POOL,
    PREFIX,
    Mode,
    PoolSpecialist,
    SpecialistPoolSpec,
    SpecialistState,
    SwarmJobSpec,
)

SPECIALIST_PORT = 50051
HEALTH_PORT = 50052  # plaintext gRPC health alone, for kubelet probes (the main port serves mTLS)
TLS_MOUNT = "/etc/swarm/tls"
TLS_VOLUME = "tls"
# = swarm.model_server.serving.grpc_runtime.TLS_DIR_ENV (not imported: that pulls in grpc)
TLS_DIR_ENV = "SWARM_TLS_DIR"
HEALTH_PORT_ENV = "SWARM_HEALTH_PORT"
HEALTH_SERVICE = "swarm.v1.SpecialistService"  # SERVING once the specialist's model is loaded and it serves
# Kubelet probes of a specialist (on HEALTH_PORT): readiness every 10 s; startup: up to STARTUP_SECONDS to load a
# model (weights from a volume, the CUDA context) before liveness starts; liveness: restart after three missed
# answers 20 s apart (gRPC health is answered on threads of its own, never queued behind inference).
PROBE_PERIOD_S = 10
STARTUP_SECONDS = 600
LIVENESS_PERIOD_S = 20
LIVENESS_FAILURES = 3
PROBE_TIMEOUT_S = 5
# policy/v1 PodDisruptionBudgets (kube.py names the other kinds the operator writes).
SPECIALIST_TLS_SECRET = "swarm-specialist-tls"  # server (and client) certificate of the specialists
PRIMARY_TLS_SECRET = "swarm-primary-tls"  # client certificate of the primaries (trainer pods)
DEFAULT_IMAGE = "ghcr.io/swarm-cta/swarm:0.1.0"
MANAGED_BY = "swarm-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_POOL = f"{PREFIX}pool"
LABEL_SPECIALIST = f"{PREFIX}specialist"
LABEL_JOB = f"{PREFIX}job"
# Trainer pods hand their metrics to the operator as their container's termination message
# (trainer/commands/metrics_publisher.py).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_ENV = "SWARM_TERMINATION_MESSAGE"  # = metrics_publisher.ENV_TERMINATION_MESSAGE (a test ties them)
TEMPLATES_ENV = "SWARM_POD_TEMPLATES"
IMAGE_ENV = "SWARM_IMAGE"
TRAINER_SERVICE_ACCOUNT = "swarm-trainer"  # manifests/rbac.yaml: no Role, no token (automount off)

MODE_COMMANDS = {Mode.train: "release", Mode.evaluate: "eval", Mode.annotate: "annotate", Mode.adapt: "adapt",
                 Mode.parl: "train"}  # fmt: skip
SPECIALIST_HOST = "0.0.0.0"  # all interfaces: the CLI's default (127.0.0.1) would make the Service unreachable
WORK_DIR = "/var/lib/swarm"  # writable: emptyDir, or the SwarmJob's output claim (the root filesystem is read-only)
WORK_VOLUME = "work"
RUN_DIR = f"{WORK_DIR}/run"
ADAPTED_DIR = f"{RUN_DIR}/adapted"  # mode adapt: the adapted specialist
POLICY_DIR = f"{RUN_DIR}/orchestrator"  # mode parl: the trained orchestrator policy
REPORTS_DIR = f"{WORK_DIR}/reports"
METRICS_JSON = f"{WORK_DIR}/metrics.json"
PREDICTIONS_CSV = f"{WORK_DIR}/predictions.csv"
SUMMARY_JSON = f"{WORK_DIR}/summary.json"
MODELS_DIR = "/models"  # read-only PVC with specialist and primary checkpoints
MODELS_CLAIM = "swarm-models"
DATA_DIR = "/data"  # read-only PVC with the data sets (trainer pods)
DATA_CLAIM = "swarm-data"
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource (taint key of GPU nodes)
GPU_RUNTIME_CLASS = "nvidia"  # the NVIDIA container runtime: the node's GPUs without claiming nvidia.com/gpu
VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
DRIVER_CAPABILITIES_ENV = "NVIDIA_DRIVER_CAPABILITIES"
DRIVER_CAPABILITIES = "compute,utility"  # the CUDA runtime (compute) and NVML (utility)
HOSTNAME_LABEL = "kubernetes.io/hostname"
DEVICE_CUDA = "cuda"  # `--device` of a pod whose container requests a GPU (the one it is given)
DEVICE_CPU = "cpu"

_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
_RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def _tls(secret: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(mount, volume, env) of a TLS Secret: required (a pod without its certificate does not start, rather than
    serving or calling in plaintext)."""
    return (
        {"name": TLS_VOLUME, "mountPath": TLS_MOUNT, "readOnly": True},
        {"name": TLS_VOLUME, "secret": {"secretName": secret, "defaultMode": 0o440}},
        {"name": TLS_DIR_ENV, "value": TLS_MOUNT},
    )


def _pod_template(
    container: str,
    service_account: str,
    resources: dict[str, Any],
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    env: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"labels": {LABEL_PART_OF: "swarm"}},
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,  # neither specialists nor trainers call the API
            "runtimeClassName": GPU_RUNTIME_CLASS,
            "securityContext": _RESTRICTED_POD,
            "tolerations": [_GPU_TOLERATION],
            "containers": [
                {
                    "name": container,
                    "image": DEFAULT_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": _RESTRICTED_CONTAINER,
                    "resources": resources,
                    "env": [
                        {"name": "HOME", "value": "/tmp"},
                        {"name": "XDG_CACHE_HOME", "value": "/cache"},
                        *(env or []),
                    ],
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "cache", "mountPath": "/cache"},
                        *mounts,
                    ],
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}},
                *volumes,
            ],
        },
    }


def default_templates() -> dict[str, dict[str, Any]]:
    """The built-in pod templates; manifests/templates/*.yaml must equal these (a test checks)."""
    models_mount = {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}
    models = {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}}
    specialist_tls_mount, specialist_tls, specialist_tls_env = _tls(SPECIALIST_TLS_SECRET)
    primary_tls_mount, primary_tls, primary_tls_env = _tls(PRIMARY_TLS_SECRET)
    return {
        "specialist": _pod_template(
            "specialist",
            "swarm-specialist",
            {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
            mounts=[models_mount, specialist_tls_mount],
            volumes=[models, specialist_tls],
            env=[specialist_tls_env],
        ),
        "trainer": _pod_template(
            "trainer",
            TRAINER_SERVICE_ACCOUNT,
            {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
            mounts=[
                {"name": WORK_VOLUME, "mountPath": WORK_DIR},
                models_mount,
                {"name": "data", "mountPath": DATA_DIR, "readOnly": True},
                primary_tls_mount,
            ],
            volumes=[
                {"name": WORK_VOLUME, "emptyDir": {}},
                models,
                {"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM, "readOnly": True}},
                primary_tls,
            ],
            env=[primary_tls_env],
        ),
    }


def load_templates(directory: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Templates from `directory` (default $SWARM_POD_TEMPLATES), file by file, else the built-in ones."""
    templates = default_templates()
    directory = directory or os.environ.get(TEMPLATES_ENV)
    if directory:
        for name in templates:
            path = Path(directory) / f"{name}.yaml"
            if path.is_file():
                templates[name] = yaml.safe_load(path.read_text())
    return templates


def dns_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1035 label from parts: lowercase, starts with a letter, hash-suffixed when it must be shortened."""
    raw = "-".join(parts).lower()
    name = re.sub(r"[^a-z0-9-]", "-", raw).strip("-")
    if not name or not name[0].isalpha():
        name = f"s-{name}"
    if len(name) <= limit and name == raw:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def specialist_object_name(pool: str, specialist: str) -> str:
    """POOL--SPECIALIST: neither name may contain "--" (the CRDs forbid it), so the first "--" splits them and two
    pools never share an object name (with "-", pool x-y + specialist z and pool x + specialist y-z would)."""
    return dns_name(f"{pool}--{specialist}")


def trainer_pod_name(job: str) -> str:
    return dns_name(job, "primary")


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def base_labels(component: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "swarm",
        LABEL_NAME: "swarm",
        LABEL_COMPONENT: component,
    }


def specialist_labels(pool: str, specialist: str) -> dict[str, str]:
    return {**base_labels("specialist"), LABEL_POOL: pool, LABEL_SPECIALIST: specialist}


def trainer_labels(job: str, pool: str) -> dict[str, str]:
    return {**base_labels("trainer"), LABEL_JOB: job, LABEL_POOL: pool}


def _metadata(name: str, owner: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }


def pod_device(template: dict[str, Any]) -> str:
    """`cuda` when the template runs under the `nvidia` RuntimeClass or its (first) container requests or is
    limited to at least one `nvidia.com/gpu`, else `cpu`."""
    spec = template.get("spec", {})
    if spec.get("runtimeClassName") == GPU_RUNTIME_CLASS:
        return DEVICE_CUDA
    resources = spec.get("containers", [{}])[0].get("resources") or {}
    for kind in ("limits", "requests"):
        try:
            if float((resources.get(kind) or {}).get(GPU_RESOURCE, 0)) > 0:
                return DEVICE_CUDA
        except (TypeError, ValueError):  # not a number: the API server would reject the pod anyway
            continue
    return DEVICE_CPU


def request_gpu_memory(pod_spec: dict[str, Any], nbytes: int) -> None:
    """Make a GPU pod request `nbytes` (in whole MiB) of the nodes' GPU-memory resource; CPU pods request none.
    Extended resources cannot be overcommitted: requests and limits are equal."""
    if pod_device({"spec": pod_spec}) != DEVICE_CUDA:
        return
    resources = pod_spec["containers"][0].setdefault("resources", {})
    amount = str(budget.mib(nbytes))
    for kind in ("requests", "limits"):
        resources[kind] = {**(resources.get(kind) or {}), budget.GPU_MEMORY_RESOURCE: amount}


def pin_gpu(pod_spec: dict[str, Any], gpu: tuple[str, int]) -> None:
    """Pin a GPU pod (CPU pods are left alone) to the (node, GPU index) its pool planned: a hostname node selector,
    and for the NVIDIA container runtime NVIDIA_VISIBLE_DEVICES (the one GPU: unset, the runtime exposes none) and
    NVIDIA_DRIVER_CAPABILITIES (compute,utility: the CUDA libraries, which older toolkits leave out when it is
    unset; a template's own value is kept). A template's NVIDIA_VISIBLE_DEVICES (e.g. `all`) is replaced, not
    repeated."""
    if pod_device({"spec": pod_spec}) != DEVICE_CUDA:
        return
    pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), HOSTNAME_LABEL: gpu[0]}
    container = pod_spec["containers"][0]
    env = [e for e in container.get("env") or [] if e.get("name") != VISIBLE_DEVICES_ENV]
    env.append({"name": VISIBLE_DEVICES_ENV, "value": str(gpu[1])})
    if not any(e.get("name") == DRIVER_CAPABILITIES_ENV for e in env):
        env.append({"name": DRIVER_CAPABILITIES_ENV, "value": DRIVER_CAPABILITIES})
    container["env"] = env


def _fill_template(
    template: dict[str, Any],
    labels: dict[str, str],
    image: str | None,
    command: list[str],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    pod = copy.deepcopy(template)
    pod.setdefault("metadata", {})
    pod["metadata"]["labels"] = {**pod["metadata"].get("labels", {}), **labels}
    container = pod["spec"]["containers"][0]
    if image or os.environ.get(IMAGE_ENV):
        container["image"] = image or os.environ[IMAGE_ENV]
    container["command"] = command
    container["env"] = [*container.get("env", []), *env]
    return pod


def specialist_command(specialist: PoolSpecialist, device: str = DEVICE_CUDA) -> list[str]:
    """`swarm serve-specialist` for one specialist; `model` is a local path (image or mounted volume)."""
    return [
        "swarm",
        "serve-specialist",
        "--specialist",
        specialist.name,
        "--host",
        SPECIALIST_HOST,
        "--port",
        str(SPECIALIST_PORT),
        "--checkpoint-dir",
        specialist.model,
        "--dtype",
        str(specialist.dtype),
        "--device",
        device,
    ]


def specialist_deployment(
    pool: dict[str, Any],
    specialist: PoolSpecialist,
    replicas: int,
    node_selector: dict[str, str],
    template: dict[str, Any],
    image: str | None = None,
    *,
    resident_bytes: int = 0,
    gpu: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The specialist's Deployment; `resident_bytes` is what it requests of the GPU-memory resource, `gpu` the
    (node, GPU index) its pool placed it on (None while it is not placed: cold, or over budget)."""
    pool_name = pool["metadata"]["name"]
    name = specialist_object_name(pool_name, specialist.name)
    labels = specialist_labels(pool_name, specialist.name)
    pod = _fill_template(
        template,
        labels,
        image,
        specialist_command(specialist, pod_device(template)),
        [
            {"name": "SWARM_SPECIALIST_MODEL", "value": specialist.model},
            {"name": "SWARM_SPECIALIST_DOMAIN", "value": specialist.domain},
            {"name": "SWARM_SPECIALIST_DTYPE", "value": specialist.dtype},
            {"name": HEALTH_PORT_ENV, "value": str(HEALTH_PORT)},
        ],
    )
    pod["spec"]["nodeSelector"] = {**pod["spec"].get("nodeSelector", {}), **node_selector}
    if resident_bytes:
        request_gpu_memory(pod["spec"], resident_bytes)
    container = pod["spec"]["containers"][0]
    if gpu is not None:
        pin_gpu(pod["spec"], gpu)
    container["ports"] = [
        {"name": "grpc", "containerPort": SPECIALIST_PORT, "protocol": "TCP"},
        {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
    ]
    # On the plaintext health port: the main port may serve mTLS, which kubelet's gRPC probe cannot speak. A
    # template's own probe of a kind is kept.
    for kind, probe in specialist_probes().items():
        container.setdefault(kind, probe)
    priority = (pool.get("spec") or {}).get("priorityClassName")
    if priority:
        pod["spec"]["priorityClassName"] = priority
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, pool, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_POOL: pool_name, LABEL_SPECIALIST: specialist.name}},
            # Recreate: a rolling update would briefly hold two copies of the weights, over the budget.
            "strategy": {"type": "Recreate"},
            "template": pod,
        },
    }


def specialist_probes() -> dict[str, dict[str, Any]]:
    """Readiness, startup and liveness probes of a specialist container, all gRPC health on HEALTH_PORT. Readiness
    and startup ask for the specialist's service (SERVING once its model is loaded); liveness asks for the server
    as a whole (""), so a server that is up but draining or not yet serving its model is not restarted for it."""
    grpc = {"port": HEALTH_PORT, "service": HEALTH_SERVICE}
    return {
        "readinessProbe": {"grpc": grpc, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": PROBE_TIMEOUT_S},
        "startupProbe": {
            "grpc": grpc,
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": STARTUP_SECONDS // PROBE_PERIOD_S,
        },
        "livenessProbe": {
            "grpc": {"port": HEALTH_PORT, "service": ""},
            "periodSeconds": LIVENESS_PERIOD_S,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": LIVENESS_FAILURES,
        },
    }


def specialist_pdb(pool: dict[str, Any], specialist: str) -> dict[str, Any]:
    """The PodDisruptionBudget of one specialist's pods (same name and selector as its Deployment): minAvailable 1,
    so no voluntary eviction takes down its one ready replica; a pod that is not ready may always be evicted."""
    pool_name = pool["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            specialist_object_name(pool_name, specialist), pool, specialist_labels(pool_name, specialist)
        ),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {LABEL_POOL: pool_name, LABEL_SPECIALIST: specialist}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def guarded_specialists(spec: SpecialistPoolSpec, rows: list[dict[str, Any]], held: Iterable[str]) -> list[str]:
    """The specialists (in spec order) that get a PodDisruptionBudget: scaled up (a status row with replicas) and
    warm or `held` by a running job; none where the pool's podDisruptionBudgets is false."""
    if not spec.pod_disruption_budgets:
        return []
    held = set(held)
    up = {r["name"]: r for r in rows if r.get("replicas")}
    return [
        s.name
        for s in spec.specialists
        if s.name in up and (up[s.name].get("state") == SpecialistState.Warm or s.name in held)
    ]


def trainer_pdb_name(job: str) -> str:
    """`<job>.trainer`: a specialist's budget is named `<pool>--<specialist>` (DNS labels: no dot), so no job name
    can give a trainer's budget a specialist's name (`<job>-primary` could: job `sotab--x`, specialist `x-primary`)."""
    return f"{job}.trainer"


def trainer_pdb(pool: dict[str, Any], job: str) -> dict[str, Any]:
    """The PodDisruptionBudget of a running job's trainer pod (`trainer_pdb_name`; owned by the pool, which holds the
    job's claim): a drain that would take the trainer waits as it waits for the job's specialists."""
    pool_name = pool["metadata"]["name"]
    labels = trainer_labels(job, pool_name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(trainer_pdb_name(job), pool, labels),
        "spec": {
            "minAvailable": 1,  # (a bare pod: maxUnavailable needs a controller with a scale)
            "selector": {"matchLabels": {LABEL_COMPONENT: "trainer", LABEL_POOL: pool_name, LABEL_JOB: job}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def specialist_pdbs(
    pool: dict[str, Any],
    spec: SpecialistPoolSpec,
    rows: list[dict[str, Any]],
    held: Iterable[str],
    running_jobs: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The pool's desired PodDisruptionBudgets: its guarded specialists' (`guarded_specialists`) and the trainers of
    its `running_jobs` (the jobs whose trainer pod exists); none where podDisruptionBudgets is false."""
    if not spec.pod_disruption_budgets:
        return []
    return [specialist_pdb(pool, name) for name in guarded_specialists(spec, rows, held)] + [
        trainer_pdb(pool, job) for job in sorted(set(running_jobs))
    ]


def specialist_service(pool: dict[str, Any], specialist: PoolSpecialist) -> dict[str, Any]:
    pool_name = pool["metadata"]["name"]
    name = specialist_object_name(pool_name, specialist.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, pool, specialist_labels(pool_name, specialist.name)),
        "spec": {
            "selector": {LABEL_POOL: pool_name, LABEL_SPECIALIST: specialist.name},
            "ports": [
                {
                    "name": "grpc",
                    "port": SPECIALIST_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }


def specialist_endpoint(namespace: str, pool: str, specialist: str) -> str:
    return f"{specialist_object_name(pool, specialist)}.{namespace}.svc:{SPECIALIST_PORT}"


def trainer_command(
    spec: SwarmJobSpec, experts: Mapping[str, str] | None = None, device: str = DEVICE_CUDA
) -> list[str]:
    """The primary's command per mode and `--device`, then the job's extraArgs, which may set no flag the operator
    sets (a ValueError: `reserved_flags` names them; the job is refused before this is called). Specialist endpoints
    come in the environment (SWARM_SPECIALIST_ENDPOINTS); mode train builds the released swarm against them
    (`swarm release`: honest fusion from the tables they record, a policy); mode parl passes the job's PARL settings
    (annealSteps as a share of the iterations). `experts` (mode adapt): the model path of each of the job's
    specialists in its pool."""
    if reserved := reserved_flags(spec):
        raise ValueError(f"extraArgs set flags the operator sets: {', '.join(reserved)}")
    return [*_operator_command(spec, experts, device), *spec.extra_args]


def flag_name(arg: str) -> str | None:
    """The long option an argument names (`--run-dir` of `--run-dir` and `--run-dir=x`), else None (a value, or
    `--`, after which nothing is an option). The CLI (click) has no short options and takes no abbreviations."""
    if not arg.startswith("--") or arg == "--":
        return None
    return arg.split("=", 1)[0]


def reserved_flags(spec: SwarmJobSpec) -> list[str]:
    """The flags of the job's extraArgs that its trainer command already sets (and `--device`): click keeps the
    last value of an option, so each would override the operator's (a second `--run-dir` could write anywhere the
    pod can)."""
    experts = dict.fromkeys(spec.specialists, "") if Mode(spec.mode) == Mode.adapt else None
    owned = {f for arg in _operator_command(spec, experts, DEVICE_CUDA) if (f := flag_name(arg))}
    found: list[str] = []
    for arg in spec.extra_args:
        if arg == "--":
            break
        if (name := flag_name(arg)) in owned and name not in found:
            found.append(name)
    return found


def _operator_command(spec: SwarmJobSpec, experts: Mapping[str, str] | None, device: str) -> list[str]:
    mode = Mode(spec.mode)
    command = ["swarm", MODE_COMMANDS[mode], "--data", spec.data]
    if mode == Mode.adapt:
        command += ["--domain", str(spec.domain), "--out", ADAPTED_DIR, "--reports-dir", REPORTS_DIR]
        for name in spec.specialists:
            command += ["--expert", f"{name}={(experts or {})[name]}"]
    elif mode == Mode.train:
        command += ["--run-dir", RUN_DIR, "--fusion", str(spec.fusion), "--max-specialists", str(spec.max_specialists)]
    elif mode == Mode.parl:
        parl = spec.parl
        command += ["--mode", "parl", "--checkpoint", _checkpoint(spec), "--split", parl.split, "--run-dir", RUN_DIR,
                    "--policy-out", POLICY_DIR, "--reports-dir", REPORTS_DIR, "--iterations", str(parl.iterations),
                    "--lambda1", str(parl.lambda1), "--lambda2", str(parl.lambda2),
                    "--anneal", str(min(1.0, parl.anneal_steps / parl.iterations)),
                    "--beta-calls", str(parl.beta_calls), "--beta-steps", str(parl.beta_steps),
                    "--beta-spawn", str(parl.beta_spawn),
                    "--max-deep", str(parl.max_deep)]  # fmt: skip
        if parl.spawn_budget:
            command += ["--spawn-budget", str(parl.spawn_budget)]
    elif mode == Mode.evaluate:
        command += ["--checkpoint", _checkpoint(spec), "--json", METRICS_JSON]
    else:
        command += ["--checkpoint", _checkpoint(spec), "--out", PREDICTIONS_CSV, "--json", SUMMARY_JSON]
    return [*command, "--device", device]


def _checkpoint(spec: SwarmJobSpec) -> str:
    if not spec.checkpoint:  # the model validator and the CRD's CEL rule already reject this
        raise ValueError(f"mode {spec.mode} needs spec.checkpoint")
    return spec.checkpoint


def trainer_pod(
    job: dict[str, Any],
    spec: SwarmJobSpec,
    endpoints: dict[str, str],
    template: dict[str, Any],
    image: str | None = None,
    experts: Mapping[str, str] | None = None,
    gpu: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The job's trainer (primary) pod; `gpu` is the (node, GPU index) its pool placed it on beside its
    specialists: a GPU pod is pinned there (hostname node selector, NVIDIA_VISIBLE_DEVICES), as a specialist is."""
    job_name = job["metadata"]["name"]
    labels = trainer_labels(job_name, spec.pool_ref)
    pod = _fill_template(
        template,
        labels,
        image,
        trainer_command(spec, experts, pod_device(template)),
        [
            {
                "name": "SWARM_SPECIALIST_ENDPOINTS",
                "value": ",".join(f"{k}={v}" for k, v in sorted(endpoints.items())),
            },
            {"name": TERMINATION_MESSAGE_ENV, "value": TERMINATION_MESSAGE_PATH},
        ],
    )
    container = pod["spec"]["containers"][0]
    container["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    container["terminationMessagePolicy"] = "File"  # metrics only: a crash's log tail is not JSON
    pod_meta = pod.pop("metadata")
    meta = _metadata(trainer_pod_name(job_name), job, pod_meta["labels"])
    if pod_meta.get("annotations"):
        meta["annotations"] = pod_meta["annotations"]
    if spec.output is not None:
        if spec.output.claim_name in template_claims(template):
            raise ValueError(f"output claim {spec.output.claim_name!r} is mounted by the trainer pod template")
        _work_on_claim(pod["spec"], spec.output.claim_name, output_sub_path(job_name, spec))
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"].setdefault("serviceAccountName", TRAINER_SERVICE_ACCOUNT)
    if spec.priority_class_name:
        pod["spec"]["priorityClassName"] = spec.priority_class_name
    request_gpu_memory(pod["spec"], spec.gpu_memory_bytes)
    if gpu is not None:
        pin_gpu(pod["spec"], gpu)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod["spec"]}


def template_claims(template: dict[str, Any]) -> set[str]:
    """PersistentVolumeClaims a pod template mounts besides the work directory (the served models, the data sets):
    never a job's output claim, which is mounted read-write."""
    return {
        str(v["persistentVolumeClaim"].get("claimName"))
        for v in (template.get("spec") or {}).get("volumes") or []
        if v.get("name") != WORK_VOLUME and "persistentVolumeClaim" in v
    }


def output_sub_path(job_name: str, spec: SwarmJobSpec) -> str:
    return (spec.output.sub_path if spec.output else None) or job_name


def _work_on_claim(pod_spec: dict[str, Any], claim: str, sub_path: str) -> None:
    """Back the work directory with the job's claim (its own directory in it) instead of the template's volume."""
    pod_spec["volumes"] = [
        *(v for v in pod_spec.get("volumes", []) if v["name"] != WORK_VOLUME),
        {"name": WORK_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
    ]
    mounts = pod_spec["containers"][0].setdefault("volumeMounts", [])
    work = [m for m in mounts if m["name"] == WORK_VOLUME]
    if not work:
        work = [{"name": WORK_VOLUME, "mountPath": WORK_DIR}]
        mounts.append(work[0])
    for mount in work:
        mount["subPath"] = sub_path


def custom_resource(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A SpecialistPool or SwarmJob body (used by tests, the benchmark and `kubectl apply` samples alike)."""
    assert kind in {POOL.kind, JOB.kind}, kind
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
