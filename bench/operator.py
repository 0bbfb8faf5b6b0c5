"""Operator benchmark: the `swarm operator` process against the emulated Kubernetes API and a real one, side by side.

The emulated API is in-process (kmock); the real one is a control plane of local processes.

Both sides measure the same two things:

1. Job latency: time from creating a SwarmJob (which requests a cold specialist) to all of its objects existing:
   the trainer pod, the specialist scaled from zero, and the job's status naming the pod (median, p90, p95, max).
2. Reconcile throughput at scale: nodes and pools of 4 specialists (1 warm) created before the operator starts;
   time from starting the operator process until every pool has its first status (observedGeneration) and its
   Deployments exist: pools and objects (Deployments + Services) reconciled per second.

Emulator side (swarm.testing.emulator, kmock on loopback; measured as before): 1000 nodes (half of them RTX 4090
nodes with NVML readings) x 100 pools. Objects only exist: nothing schedules or runs a pod, no admission, no GC; for
the job latency, one RTX 4090 node per three jobs (each running job holds its trainer's GPU memory in the plan) and
Deployments report their replicas ready at once (the emulator's opt-in readiness controller: a trainer pod is created
only once its specialists are ready).

Real side (swarm.testing.control_plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
from .cache/cluster-bins/<release>, built by `make cluster-bins`): the operator runs as its ServiceAccount in
namespace `swarm` (RBAC, admission and CRD validation apply); nodes are kwok fake RTX 4090 nodes advertising
`swarm.ai/gpu-memory-mib` (24564 MiB, half of the nodes; the others have no GPU) and specialists declare
residentBytes 1 GiB. Job latency ends only when the trainer pod and the cold specialist's pod are Running (placed by
the real scheduler, Running via kwok). Throughput: the emulator's sizes, 1000 nodes x 100 pools (about 2.5 minutes on
2 vCPUs; --real-nodes/--real-pools change them), plus the time until every warm specialist's pod is Running
(Deployment -> ReplicaSet -> pod by kube-controller-manager, placed by kube-scheduler). Without the binaries (`make
cluster-bins`) or the harness's dependencies the real side is skipped with a message. The real side also records
kube-apiserver's request counters (apiserver_request_total, all clients) per job and during the throughput run.

Writes reports/bench_operator.json, .md (the side-by-side table) and .png, and prints the table.
Usage: .venv/bin/python -m swarm.bench.operator [--quick] [--real | --emulator]  (default: both sides; a side not
run is carried over from the existing JSON report, marked as such).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.operator import builders
from swarm.operator.kube import SERVICES
from swarm.operator.models import GPU_PRODUCT_LABEL, RTX_4090_PRODUCT
from swarm.testing.emulator import (
    DEPLOYMENTS,
    JOBS,
    NODES,
    PODS,
    POOLS,
    RTX_4090_TOTAL,
    EmulatedCluster,
    OperatorProcess,
    gpu_node,
    job_body,
    pool_body,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
REAL_NS = "swarm"  # what swarm.testing.operator_process.install() prepares: RBAC, PVCs, TLS Secrets
GIB = 1024**3
MIB = 1024**2
SPECIALISTS_PER_POOL = 4
NO_METRICS = ("--metrics-port", "0")  # no /metrics endpoint: port 8081 may be taken by another operator process
REAL_POLL_S = 0.05  # latency poll interval on the real cluster (each poll is a few HTTPS GETs)
SIZES = {  # [jobs, nodes, pools]
    "emulator": {"full": [10, 1000, 100], "quick": [3, 50, 10]},
    "real": {"full": [10, 1000, 100], "quick": [3, 50, 10]},  # 1000 x 100 fits ~2.5 min on 2 vCPUs
}


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))]


def latency_summary(samples: list[float]) -> dict[str, Any]:
    return {
        "jobs": len(samples),
        "median_s": statistics.median(samples),
        "p90_s": quantile(samples, 0.90),
        "p95_s": quantile(samples, 0.95),
        "max_s": max(samples),
        "samples_s": samples,
    }


# ============================================================================================== emulator side
def node(index: int, gpu: bool) -> dict[str, Any]:
    return gpu_node(f"node-{index}", total=RTX_4090_TOTAL if gpu else None)


def pool(name: str, specialists: int = SPECIALISTS_PER_POOL) -> dict[str, Any]:
    names = tuple(f"s{i}" for i in range(specialists))
    return pool_body(name, names=names, warm=names[:1], namespace=NS, idleTimeoutSeconds=3600)


JOBS_PER_GPU = 3  # a job holds its trainer's 6 GiB (gpuMemoryBytes) and one specialist: three fit a 24 GiB GPU


def job_latency(workdir: Path, jobs: int) -> dict[str, Any]:
    with EmulatedCluster(workdir) as cluster:
        for i in range(-(-jobs // JOBS_PER_GPU)):  # the jobs keep running: each holds its trainer's GPU memory
            cluster.create(NODES, node(i, gpu=True))
        cluster.create(POOLS, pool("p", specialists=jobs + 1))
        cluster.ready_deployments()  # the trainer pod waits for its specialists to be ready
        with OperatorProcess(cluster, NS, resync=30, retry=1) as op:
            wait_for(
                lambda: (cluster.get(POOLS, NS, "p") or {}).get("status", {}).get("spawnBudget"),
                timeout=60,
                what=f"pool ready\n{op.log()[-2000:]}",
            )
            samples = []
            for i in range(jobs):
                started = time.perf_counter()
                cluster.create(JOBS, job_body(f"j{i}", pool="p", specialists=(f"s{i + 1}",), namespace=NS))

                def placed(i: int = i) -> Any:
                    deployment = cluster.get(DEPLOYMENTS, NS, builders.specialist_object_name("p", f"s{i + 1}"))
                    return (
                        cluster.get(PODS, NS, builders.trainer_pod_name(f"j{i}"))
                        and (deployment or {}).get("spec", {}).get("replicas") == 1
                        and (cluster.get(JOBS, NS, f"j{i}") or {}).get("status", {}).get("pods")
                    )

                wait_for(
                    placed,
                    timeout=60,
                    interval=0.005,
                    what=f"job j{i} objects",
                )
                samples.append(time.perf_counter() - started)
    return latency_summary(samples)


def throughput(workdir: Path, nodes: int, pools: int) -> dict[str, Any]:
    with EmulatedCluster(workdir) as cluster:
        for i in range(nodes):
            cluster.create(NODES, node(i, gpu=i % 2 == 0))
        for i in range(pools):
            cluster.create(POOLS, pool(f"p{i}"))
        with OperatorProcess(cluster, NS, resync=3600) as op:
            started = time.perf_counter()
            first: list[float] = []

            def reconciled() -> bool:
                seen = [bool((p.get("status") or {}).get("observedGeneration")) for p in cluster.list(POOLS, NS)]
                if any(seen) and not first:
                    first.append(time.perf_counter() - started)
                return all(seen)

            wait_for(reconciled, timeout=150, interval=0.2, what=f"all pools reconciled\n{op.log()[-2000:]}")
            elapsed = time.perf_counter() - started
            statuses = [p["status"] for p in cluster.list(POOLS, NS)]
            deployments = len(cluster.list(DEPLOYMENTS, NS))
            services = len(cluster.list(SERVICES, NS))
    return rates(
        {
            "nodes": nodes,
            "gpu_nodes": (nodes + 1) // 2,
            "pools": pools,
            "specialists_per_pool": SPECIALISTS_PER_POOL,
            "seconds_to_first_pool_status": first[0] if first else elapsed,
            "seconds_to_all_pools_reconciled": elapsed,
            "deployments": deployments,
            "services": services,
            "gpus_seen_per_pool": statistics.mean(s["gpus"] for s in statuses),
            "spawn_budget_per_pool": statistics.mean(s["spawnBudget"] for s in statuses),
        }
    )


def rates(scale: dict[str, Any]) -> dict[str, Any]:
    """pools/s and objects/s (the Deployments and Services the operator made) over the time to all reconciled, and
    the rate after the first pool's status (without the process start and leader election)."""
    elapsed, first, pools = (
        scale["seconds_to_all_pools_reconciled"],
        scale["seconds_to_first_pool_status"],
        scale["pools"],
    )
    scale["pools_per_second"] = pools / elapsed
    scale["objects_per_second"] = (scale["deployments"] + scale["services"]) / elapsed
    scale["pools_per_second_after_first"] = (pools - 1) / (elapsed - first) if pools > 1 and elapsed > first else None
    return scale


def emulator_side(workdir: Path, quick: bool) -> dict[str, Any]:
    jobs, nodes, pools = SIZES["emulator"]["quick" if quick else "full"]
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    latency = job_latency(workdir / "a", jobs)
    scale = throughput(workdir / "b", nodes, pools)
    load.append(os.getloadavg()[0])
    return {
        "api": "kmock-based emulated API (swarm.testing.emulator) on loopback, namespace bench",
        "job_latency": latency,
        "throughput": scale,
        "wall_seconds": time.perf_counter() - started,
        "load_average_1m": {"before": load[0], "after": load[1]},
    }


# ============================================================================================== real side
def real_pool(name: str, specialists: int) -> dict[str, Any]:
    """Pool of 1 GiB specialists (first one warm) on the kwok RTX 4090 nodes; those carry no NVML reading (no node
    agent), so the budget uses fallbackCapacity: one 24564 MiB GPU per node, what the nodes advertise."""
    from swarm.testing.operator_process import RTX_4090_MIB

    names = [f"s{i}" for i in range(specialists)]
    spec = {
        "specialists": [
            {"name": n, "domain": f"{n} labels", "model": "/models/specialists", "residentBytes": GIB} for n in names
        ],
        "warm": names[:1],
        "nodeSelector": {GPU_PRODUCT_LABEL: RTX_4090_PRODUCT},
        "idleTimeoutSeconds": 3600,
        "fallbackCapacity": {"gpusPerNode": 1, "memoryBytesPerGpu": RTX_4090_MIB * MIB},
    }
    return builders.custom_resource("SpecialistPool", name, REAL_NS, spec)


def running(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]


def api_requests(plane: Any) -> dict[str, float]:
    """kube-apiserver's request counters (apiserver_request_total from /metrics) by `VERB resource[/sub]`, summed
    over codes: every client's requests (operator, controllers, scheduler, kwok, this benchmark's polling)."""
    counts: dict[str, float] = {}
    for line in str(plane.request("GET", "/metrics")).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(
            (k, v.strip('"')) for k, _, v in (item.partition("=") for item in labels_text.split('",') if item)
        )
        key = f"{labels.get('verb')} {labels.get('resource')}" + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        counts[key] = counts.get(key, 0) + float(value)
    return counts


def requests_between(before: dict[str, float], after: dict[str, float], per: float, top: int = 12) -> dict[str, Any]:
    diff = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
    ranked = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
    return {"total": sum(diff.values()) / per, "top": {k: v / per for k, v in ranked}}


def real_job_latency(plane: Any, workdir: Path, jobs: int, gpu_nodes: int) -> dict[str, Any]:
    """One pool with jobs + 1 specialists (s0 warm); job i asks for cold specialist s{i+1}; a job's sample ends when
    its trainer pod is Running, s{i+1}'s Deployment is scaled to 1 and its pod Running, and the job's status names
    the trainer pod. The time each of these was first seen is kept too (medians in `components_median_s`)."""
    from swarm.testing.operator_process import APPS, CORE, SWARM
    from swarm.testing.operator_process import gpu_node as kwok_gpu_node
    from swarm.testing.operator_process import operator_process as RealOperator

    for i in range(gpu_nodes):
        kwok_gpu_node(plane, f"gpu-{i}")
    plane.create(SWARM, "specialistpools", real_pool("p", jobs + 1), REAL_NS)
    warm = f"{builders.LABEL_POOL}=p,{builders.LABEL_SPECIALIST}=s0"
    with RealOperator(
        plane,
        workdir / "latency-operator.log",
        extra_args=NO_METRICS,
        SWARM_RESYNC_SECONDS="30",
        SWARM_RETRY_SECONDS="1",
    ) as op:
        try:
            plane.wait_for(
                lambda: (
                    (plane.get(SWARM, "specialistpools", "p", REAL_NS) or {}).get("status", {}).get("spawnBudget")
                    and running(plane.list(CORE, "pods", REAL_NS, warm))
                ),
                timeout=120,
                what="pool ready and its warm specialist Running",
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{op.log()[-3000:]}") from None
        def job_checks(job: str, trainer: str, deployment: str, selector: str) -> dict[str, Callable[[], Any]]:
            """What a job's latency waits for, each timed from the job's creation."""
            return {
                "trainer_pod_created": lambda: plane.get(CORE, "pods", trainer, REAL_NS),
                "trainer_pod_running": lambda: (
                    (plane.get(CORE, "pods", trainer, REAL_NS) or {}).get("status", {}).get("phase") == "Running"
                ),
                "specialist_scaled": lambda: (
                    (plane.get(APPS, "deployments", deployment, REAL_NS) or {}).get("spec", {}).get("replicas") == 1
                ),
                "specialist_pod_running": lambda: running(plane.list(CORE, "pods", REAL_NS, selector)),
                "job_status_names_pod": lambda: (
                    trainer in ((plane.get(SWARM, "swarmjobs", job, REAL_NS) or {}).get("status") or {}).get("pods", [])
                ),
            }

        samples: list[float] = []
        components: dict[str, list[float]] = {}
        before = api_requests(plane)
        for i in range(jobs):
            job, specialist = f"j{i}", f"s{i + 1}"
            trainer = builders.trainer_pod_name(job)
            deployment = builders.specialist_object_name("p", specialist)
            selector = f"{builders.LABEL_POOL}=p,{builders.LABEL_SPECIALIST}={specialist}"
            checks = job_checks(job, trainer, deployment, selector)
            seen: dict[str, float] = {}
            started = time.perf_counter()
            plane.create(
                SWARM, "swarmjobs", job_body(job, pool="p", specialists=(specialist,), namespace=REAL_NS), REAL_NS
            )
            deadline = started + 120
            while len(seen) < len(checks):
                for name, check in checks.items():  # each condition stays true once met: checked until it is
                    if name not in seen and check():
                        seen[name] = time.perf_counter() - started
                if len(seen) < len(checks):
                    if time.perf_counter() > deadline:
                        missing = sorted(set(checks) - set(seen))
                        raise TimeoutError(f"job {job}: not seen after 120 s: {missing}\n{op.log()[-3000:]}")
                    time.sleep(REAL_POLL_S)
            samples.append(max(seen.values()))
            for name, value in seen.items():
                components.setdefault(name, []).append(value)
        requests = requests_between(before, api_requests(plane), per=jobs)
    summary = latency_summary(samples)
    summary["api_requests_per_job"] = requests
    summary["components_median_s"] = {name: statistics.median(values) for name, values in components.items()}
    summary["poll_interval_s"] = REAL_POLL_S
    summary["gpu_nodes"] = gpu_nodes
    return summary


def real_throughput(plane: Any, workdir: Path, nodes: int, pools: int) -> dict[str, Any]:
    """`nodes` kwok nodes (even ones RTX 4090 nodes, odd ones without GPU) and `pools` pools, made before the
    operator starts; times from its start to every pool reconciled (status + its Deployments) and to every warm
    specialist's pod Running."""
    from swarm.testing.operator_process import APPS, CORE, SWARM
    from swarm.testing.operator_process import gpu_node as kwok_gpu_node
    from swarm.testing.operator_process import operator_process as RealOperator

    made = time.perf_counter()
    for i in range(nodes):
        if i % 2 == 0:
            kwok_gpu_node(plane, f"node-{i}")
        else:
            plane.add_gpu_node(f"node-{i}")  # a plain kwok node: no GPU label, capacity or taint
    for i in range(pools):
        plane.create(SWARM, "specialistpools", real_pool(f"p{i}", SPECIALISTS_PER_POOL), REAL_NS)

    def nodes_ready() -> bool:
        listed = plane.list(CORE, "nodes")
        return len(listed) == nodes and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in (n.get("status") or {}).get("conditions") or [])
            for n in listed
        )

    plane.wait_for(nodes_ready, timeout=120, interval=0.5, what="kwok nodes Ready")
    setup = time.perf_counter() - made
    expected = {
        builders.specialist_object_name(f"p{i}", f"s{j}") for i in range(pools) for j in range(SPECIALISTS_PER_POOL)
    }
    warm_pods = f"{builders.LABEL_COMPONENT}=specialist"
    marks: dict[str, float] = {}
    before = api_requests(plane)
    with RealOperator(
        plane, workdir / "throughput-operator.log", extra_args=NO_METRICS, SWARM_RESYNC_SECONDS="3600"
    ) as op:
        started = time.perf_counter()
        deadline = started + 300
        while "reconciled" not in marks or "warm_running" not in marks:
            now = time.perf_counter() - started
            if "reconciled" not in marks:
                listed = plane.list(SWARM, "specialistpools", REAL_NS)
                done = sum(bool((p.get("status") or {}).get("observedGeneration")) for p in listed)
                if done and "first" not in marks:
                    marks["first"] = now
                if done == pools and expected <= {
                    d["metadata"]["name"] for d in plane.list(APPS, "deployments", REAL_NS)
                }:
                    marks["reconciled"] = now
            if "warm_running" not in marks:
                up = len(running(plane.list(CORE, "pods", REAL_NS, warm_pods)))
                if up and "first_warm_running" not in marks:
                    marks["first_warm_running"] = now
                if up >= pools:
                    marks["warm_running"] = now
            if time.perf_counter() > deadline:
                raise TimeoutError(f"throughput: after 300 s only {sorted(marks)}\n{op.log()[-3000:]}")
            time.sleep(0.2)
        statuses = [p["status"] for p in plane.list(SWARM, "specialistpools", REAL_NS)]
        counts = {
            plural: len(plane.list(api, plural, REAL_NS))
            for api, plural in ((APPS, "deployments"), (CORE, "services"), (APPS, "replicasets"), (CORE, "pods"))
        }
        placed = running(plane.list(CORE, "pods", REAL_NS, warm_pods))
        requests = requests_between(before, api_requests(plane), per=1)
        measured = time.perf_counter() - started
    scale = rates(
        {
            "nodes": nodes,
            "gpu_nodes": (nodes + 1) // 2,
            "pools": pools,
            "specialists_per_pool": SPECIALISTS_PER_POOL,
            "seconds_to_first_pool_status": marks["first"],
            "seconds_to_all_pools_reconciled": marks["reconciled"],
            "seconds_to_first_warm_pod_running": marks["first_warm_running"],
            "seconds_to_all_warm_pods_running": marks["warm_running"],
            "deployments": counts["deployments"],
            "services": counts["services"],
            "replicasets": counts["replicasets"],
            "pods": counts["pods"],
            "warm_pods_running": len(placed),
            "nodes_used_by_warm_pods": len({p["spec"].get("nodeName") for p in placed}),
            "gpus_seen_per_pool": statistics.mean(s["gpus"] for s in statuses),
            "spawn_budget_per_pool": statistics.mean(s["spawnBudget"] for s in statuses),
            "setup_seconds_nodes_and_pools": setup,
        }
    )
    scale["warm_pods_running_per_second"] = len(placed) / marks["warm_running"]
    scale["api_requests"] = requests
    scale["api_requests_per_second"] = requests["total"] / measured
    return scale


def clean(plane: Any) -> None:
    """Empty namespace swarm between the two measurements (swarm.testing.operator_process.wipe, then what it may
    leave: ReplicaSets being collected, the stopped operator's Lease)."""
    from swarm.testing.operator_process import APPS, wipe

    wipe(plane)
    for lease in plane.list("/apis/coordination.k8s.io/v1", "leases", REAL_NS):
        plane.delete("/apis/coordination.k8s.io/v1", "leases", lease["metadata"]["name"], REAL_NS)
    plane.wait_for(lambda: not plane.list(APPS, "replicasets", REAL_NS), timeout=120, what="ReplicaSets collected")


def versions() -> dict[str, str]:
    """The Kubernetes release and the etcd and kwok modules pinned by tests/cluster/bins/go.mod."""
    from swarm.testing import control_plane

    out = {"kubernetes": control_plane.release()}
    for line in (ROOT / "tests" / "cluster" / "bins" / "go.mod").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in ("go.etcd.io/etcd/server/v3", "sigs.k8s.io/kwok"):
            out["etcd" if "etcd" in fields[0] else "kwok"] = fields[1]
    return out


def real_side(workdir: Path, quick: bool) -> dict[str, Any]:
    try:
        from swarm.testing import control_plane
    except ImportError as exc:  # the dev extras (cryptography, yaml) are not installed
        return {"skipped": f"control-plane harness not importable ({exc}); install the dev extras"}
    missing = control_plane.missing_binaries()
    if missing:
        return {
            "skipped": f"control-plane binaries missing in {control_plane.bins_dir()} ({', '.join(missing)}): "
            "run make cluster-bins"
        }
    from swarm.testing.operator_process import install

    jobs, nodes, pools = SIZES["real"]["quick" if quick else "full"]
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    with control_plane.ControlPlane(workdir) as plane:
        install(plane)
        setup = time.perf_counter() - started
        latency = real_job_latency(plane, workdir, jobs, gpu_nodes=5 if jobs > 3 else 2)
        clean(plane)
        scale = real_throughput(plane, workdir, nodes, pools)
    load.append(os.getloadavg()[0])
    return {
        "api": "kube-apiserver + etcd + kube-controller-manager + kube-scheduler + kwok on loopback (RBAC, "
        "admission, CRD validation), operator as ServiceAccount swarm/swarm-operator, namespace swarm",
        "versions": versions(),
        "job_latency": latency,
        "throughput": scale,
        "control_plane_start_and_install_seconds": setup,
        "wall_seconds": time.perf_counter() - started,
        "load_average_1m": {"before": load[0], "after": load[1]},
    }


# ============================================================================================== pending jobs
# Issue #31, defect 5: N SwarmJobs wait for GPU memory budget in the namespace (each asks for a specialist larger
# than any GPU), then jobs that fit are created one after another; each one's time from creation to phase Running,
# and the operator process's CPU (seconds of CPU per second of wall time) while N jobs wait.
PENDING_REPEATS = 5
PENDING_CPU_WINDOW_S = 30.0  # one default resync period (SWARM_RESYNC_SECONDS)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pending_pool() -> dict[str, Any]:
    """s0 (1 GiB, warm) and `huge` (64 GiB: more than any GPU, so a job asking for it waits for budget)."""
    body = real_pool("p", 1)
    body["spec"]["specialists"].append(
        {"name": "huge", "domain": "huge labels", "model": "/models/specialists", "residentBytes": 64 * GIB}
    )
    return body


def real_pending_jobs(plane: Any, workdir: Path, pending: int, repeats: int = PENDING_REPEATS) -> dict[str, Any]:
    """One pool (pending_pool) on 3 GPU nodes; `pending` jobs asking for `huge` made and seen Pending (waiting for
    budget), then `repeats` jobs asking for the warm s0, one after another: each one's time from creation to
    status.phase Running (its trainer pod placed by kube-scheduler, Running via kwok). The operator runs with the
    default SWARM_RETRY_SECONDS (15) and SWARM_RESYNC_SECONDS (30)."""
    from swarm.testing.operator_process import CORE, SWARM
    from swarm.testing.operator_process import gpu_node as kwok_gpu_node
    from swarm.testing.operator_process import operator_process as RealOperator

    for i in range(3):
        kwok_gpu_node(plane, f"gpu-{i}")
    plane.create(SWARM, "specialistpools", pending_pool(), REAL_NS)
    warm = f"{builders.LABEL_POOL}=p,{builders.LABEL_SPECIALIST}=s0"
    with RealOperator(
        plane,
        workdir / f"pending-{pending}-operator.log",
        extra_args=NO_METRICS,
        SWARM_RESYNC_SECONDS="30",
        SWARM_RETRY_SECONDS="15",
    ) as op:
        assert op.proc is not None
        pid = op.proc.pid
        try:
            plane.wait_for(
                lambda: running(plane.list(CORE, "pods", REAL_NS, warm)), timeout=120, what="warm specialist Running"
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{op.log()[-3000:]}") from None
        made = time.perf_counter()
        for i in range(pending):
            plane.create(
                SWARM, "swarmjobs", job_body(f"wait-{i}", pool="p", specialists=("huge",), namespace=REAL_NS), REAL_NS
            )

        def all_pending() -> bool:
            listed = plane.list(SWARM, "swarmjobs", REAL_NS)
            return sum(((j.get("status") or {}).get("phase") == "Pending") for j in listed) >= pending

        plane.wait_for(all_pending, timeout=900, interval=1.0, what=f"{pending} jobs Pending")
        settle = time.perf_counter() - made
        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(PENDING_CPU_WINDOW_S)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - wall0)
        samples: list[float] = []
        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        for i in range(repeats):
            name = f"fit-{i}"
            started = time.perf_counter()
            plane.create(SWARM, "swarmjobs", job_body(name, pool="p", specialists=("s0",), namespace=REAL_NS), REAL_NS)
            plane.wait_for(
                lambda n=name: (
                    ((plane.get(SWARM, "swarmjobs", n, REAL_NS) or {}).get("status") or {}).get("phase") == "Running"
                ),
                timeout=180,
                interval=REAL_POLL_S,
                what=f"job {name} Running",
            )
            samples.append(time.perf_counter() - started)
        busy_cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - wall0)
        deletion = delete_all_jobs(plane, pid, op.log)
    return {
        "pending": pending,
        "repeats": repeats,
        "time_to_running_p50_s": statistics.median(samples),
        "time_to_running_p99_s": quantile(samples, 0.99),
        "time_to_running_max_s": max(samples),
        "samples_s": samples,
        "operator_cpu_cores_waiting": idle_cpu,
        "operator_cpu_cores_during_new_jobs": busy_cpu,
        "seconds_until_all_pending": settle,
        "cpu_window_s": PENDING_CPU_WINDOW_S,
        **deletion,
    }


def delete_all_jobs(plane: Any, pid: int, log: Any) -> dict[str, Any]:
    """Every job deleted in one call (kubectl delete --all): seconds until the API server lists none, until the
    operator has released their claims (no pool row names a job in requestedBy any more), the operator's CPU over
    that time and the ERROR lines it logged meanwhile (before issue #31's fixes: 602 jobs took 127 s)."""
    from swarm.testing.operator_process import SWARM

    errors0 = log().count("ERROR")
    cpu0, started = cpu_seconds(pid), time.perf_counter()
    plane.kubectl("delete", "swarmjobs", "--all", "-n", REAL_NS, "--wait=false")
    plane.wait_for(lambda: not plane.list(SWARM, "swarmjobs", REAL_NS), timeout=600, interval=0.5, what="jobs gone")
    gone = time.perf_counter() - started

    def released() -> bool:
        rows = ((plane.get(SWARM, "specialistpools", "p", REAL_NS) or {}).get("status") or {}).get("specialists", [])
        return not any(r.get("requestedBy") for r in rows)

    plane.wait_for(released, timeout=600, interval=REAL_POLL_S, what="claims released")
    done = time.perf_counter() - started
    return {
        "delete_all_jobs_gone_s": gone,
        "delete_all_claims_released_s": done,
        "operator_cpu_cores_during_deletion": (cpu_seconds(pid) - cpu0) / done,
        "operator_errors_during_deletion": log().count("ERROR") - errors0,
    }


def pending_side(workdir: Path, counts: list[int], label: str) -> list[dict[str, Any]]:
    """real_pending_jobs for each of `counts`, on one control plane (emptied between runs)."""
    from swarm.testing import control_plane
    from swarm.testing.operator_process import install

    rows = []
    with control_plane.ControlPlane(workdir) as plane:
        install(plane)
        for pending in counts:
            print(f"== pending jobs: {pending}", flush=True)
            started = time.perf_counter()
            row = real_pending_jobs(plane, workdir, pending)
            row.update(label=label, wall_seconds=time.perf_counter() - started, commit=_commit())
            row["run_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            print(json.dumps({k: v for k, v in row.items() if k != "samples_s"}), flush=True)
            rows.append(row)
            clean(plane)
    return rows


def _commit() -> str:
    import subprocess

    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def pending_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "| code | pending jobs | new job -> Running p50 | p99 | max | operator CPU while waiting | operator CPU "
        "during new jobs | all pending after | all deleted: claims released after | operator CPU, errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        deleted = (
            f"{_s(r['delete_all_claims_released_s'])} | {r['operator_cpu_cores_during_deletion']:.2f} cores, "
            f"{r['operator_errors_during_deletion']} |"
            if "delete_all_claims_released_s" in r
            else "not measured | |"
        )
        lines.append(
            f"| {r.get('label', '')} ({r.get('commit', '?')}) | {r['pending']} | {_ms(r['time_to_running_p50_s'])} | "
            f"{_ms(r['time_to_running_p99_s'])} | {_ms(r['time_to_running_max_s'])} | "
            f"{r['operator_cpu_cores_waiting']:.2f} cores | {r['operator_cpu_cores_during_new_jobs']:.2f} cores | "
            f"{_s(r['seconds_until_all_pending'])} | {deleted}"
        )
    return lines


# ============================================================================================== report
def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "vcpus": os.cpu_count(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(report: dict[str, Any]) -> list[str]:
    emu, real = report.get("emulator") or {}, report.get("real") or {}
    sides = [s if "job_latency" in s else None for s in (emu, real)]

    def row(label: str, get: Any, fmt: Any) -> str:
        cells = []
        for side in sides:
            try:
                cells.append("-" if side is None else fmt(get(side)))
            except KeyError:
                cells.append("-")
        return f"| {label} | {' | '.join(cells)} |"

    lat = lambda key: lambda s: s["job_latency"][key]  # noqa: E731
    thr = lambda key: lambda s: s["throughput"][key]  # noqa: E731
    comp = lambda key: lambda s: s["job_latency"]["components_median_s"][key]  # noqa: E731
    real_head = "real API server"
    if real.get("versions"):
        real_head += f" (Kubernetes {real['versions']['kubernetes']} + kwok {real['versions'].get('kwok', '?')})"
    return [
        f"| metric | emulator (kmock) | {real_head} |",
        "|---|---|---|",
        row("SwarmJob -> all objects: jobs", lat("jobs"), str),
        row("SwarmJob -> all objects, median", lat("median_s"), _ms),
        row("SwarmJob -> all objects, p90", lat("p90_s"), _ms),
        row("SwarmJob -> all objects, p95", lat("p95_s"), _ms),
        row("SwarmJob -> all objects, max", lat("max_s"), _ms),
        row("of which: trainer pod created (median)", comp("trainer_pod_created"), _ms),
        row("of which: job status names the pod (median)", comp("job_status_names_pod"), _ms),
        row("of which: specialist Deployment scaled to 1 (median)", comp("specialist_scaled"), _ms),
        row("of which: trainer pod Running (median)", comp("trainer_pod_running"), _ms),
        row("of which: cold specialist pod Running (median)", comp("specialist_pod_running"), _ms),
        row("throughput: nodes (with GPU) x pools", lambda s: s["throughput"], _sizes),
        row("operator start -> first pool status", thr("seconds_to_first_pool_status"), _s),
        row(
            "operator start -> all pools reconciled (status + Deployments)", thr("seconds_to_all_pools_reconciled"), _s
        ),
        row("pools reconciled per second", thr("pools_per_second"), _rate),
        row("pools per second after the first status", thr("pools_per_second_after_first"), _rate),
        row("objects (Deployments + Services) per second", thr("objects_per_second"), _rate),
        row(
            "Deployments / Services made", lambda s: s["throughput"], lambda t: f"{t['deployments']} / {t['services']}"
        ),
        row("operator start -> all warm specialist pods Running", thr("seconds_to_all_warm_pods_running"), _s),
        row("warm pods Running per second", thr("warm_pods_running_per_second"), _rate),
        row("GPUs counted per pool", thr("gpus_seen_per_pool"), lambda v: f"{v:.0f}"),
    ]


def _sizes(t: dict[str, Any]) -> str:
    return f"{t['nodes']} ({t.get('gpu_nodes', '?')}) x {t['pools']}"


def markdown(report: dict[str, Any]) -> str:
    m, real, emu = report["machine"], report.get("real") or {}, report.get("emulator") or {}
    lines = [
        "# Operator benchmark: emulated API vs real API server",
        "",
        f"Machine: {m['platform']}, {m['vcpus']} vCPUs, {m['memory_gib']} GiB, Python {m['python']}. "
        f"Run {report['run_at']}{' (--quick sizes)' if report['quick'] else ''}; `bench/operator.py`.",
        "",
    ]
    for name, side in (("Emulator", emu), ("Real", real)):
        if side.get("skipped"):
            lines.append(f"{name} side skipped: {side['skipped']}")
        elif side.get("error"):
            lines.append(f"{name} side failed: {side['error'].splitlines()[0]}")
        elif side.get("carried_over"):
            sizes = " (--quick sizes)" if side.get("quick") else ""
            lines.append(f"{name} side carried over from the run of {side.get('run_at', 'an earlier run')}{sizes}.")
        elif side.get("load_average_1m"):
            load = side["load_average_1m"]
            lines.append(
                f"{name} side: {side['wall_seconds']:.0f} s wall; 1-minute load average {load['before']:.2f} -> "
                f"{load['after']:.2f} on {m['vcpus']} vCPUs (other work on the machine counts in it)."
            )
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    lines += ["", *table(report), ""]
    if "job_latency" in real:
        t, lat = real["throughput"], real["job_latency"]
        v = real["versions"]
        lines += [
            f"Real side: Kubernetes {v['kubernetes']} (kube-apiserver, kube-controller-manager, kube-scheduler), "
            f"etcd {v.get('etcd', '?')}, kwok {v.get('kwok', '?')}, all on loopback; control plane start + install "
            f"{real['control_plane_start_and_install_seconds']:.0f} s. The operator runs as the ServiceAccount "
            "swarm/swarm-operator with leader election. Nodes are kwok fake RTX 4090 nodes advertising 24564 MiB of "
            "swarm.ai/gpu-memory-mib (even-numbered nodes; odd ones have no GPU), specialists declare residentBytes "
            f"1 GiB (the pools plan with fallbackCapacity: no node agent). Latency: one pool of {lat['jobs'] + 1} "
            f"specialists (1 warm) on {lat['gpu_nodes']} GPU nodes, {lat['jobs']} jobs one after another, each "
            f"asking for a cold specialist, polled every {lat['poll_interval_s'] * 1000:.0f} ms. Throughput: "
            f"{t['nodes']} nodes x {t['pools']} pools of {t['specialists_per_pool']} (1 warm), made before the "
            f"operator starts, polled every 0.2 s (as on the emulator side); {t['deployments']} Deployments and "
            f"{t['services']} Services made, {t['warm_pods_running']} warm pods Running on "
            f"{t['nodes_used_by_warm_pods']} node(s), the first {_s(t.get('seconds_to_first_warm_pod_running'))} "
            f"after the operator started ({t['replicasets']} ReplicaSets by the last). "
            "Making the nodes and pools and waiting for kwok to report the nodes Ready took "
            f"{_s(t.get('setup_seconds_nodes_and_pools'))} and is not timed. The warm pods trail the Deployments "
            "because kube-controller-manager makes a ReplicaSet for every Deployment (replicas 0 included) and posts "
            "status and events for each, at its default client rate limit (--kube-api-qps 20); a likely cause, not "
            "measured here.",
            "",
        ]
        lines += requests_paragraph(lat, t)
    lines += [
        "What differs: the emulator only stores objects (JSON merge patches, equality selectors), so a job is done "
        "when its objects exist and nothing is scheduled. The real API server authenticates and authorises every "
        "call (RBAC on a ServiceAccount token), runs admission (including OwnerReferencesPermissionEnforcement) and "
        "OpenAPI/CEL validation of the CRDs, writes to etcd and fans out watch events; kube-controller-manager turns "
        "each Deployment into a ReplicaSet and a pod, kube-scheduler places each pod within the nodes' "
        "swarm.ai/gpu-memory-mib, kwok moves it to Running, and the garbage collector removes what owners leave. "
        "Those steps are what the real job latency adds on top of the operator's own round trips, and what the real "
        "throughput shares two vCPUs with (kwok also keeps every node's status fresh, and the operator watches "
        "the nodes).",
        "",
    ]
    if report.get("pending_jobs"):
        lines += [
            "## Pending jobs (issue #31, defect 5)",
            "",
            "Real control plane, `bench/operator.py --pending-jobs 0,100,... --label L`: one pool (s0 1 GiB warm, "
            "`huge` 64 GiB) on 3 kwok RTX 4090 nodes; N jobs asking for `huge` wait for GPU memory budget (all seen "
            f"Pending first), then {PENDING_REPEATS} jobs asking for the ready s0 are made one after another: "
            "creation -> status.phase Running (trainer pod placed and Running): p50, p99 (this script's quantile(): "
            f"of {PENDING_REPEATS} sorted samples the second slowest) and max. "
            "The operator runs with the default retry (15 s) and resync (30 s); its CPU is /proc/PID/stat "
            "user+system seconds per wall second over "
            f"{PENDING_CPU_WINDOW_S:.0f} s with the N jobs waiting, and over the new jobs.",
            "",
            *pending_table(report["pending_jobs"]),
            "",
        ]
    if "throughput" in emu and "throughput" in real:
        same = all(emu["throughput"][k] == real["throughput"][k] for k in ("nodes", "pools")) and (
            emu["job_latency"]["jobs"] == real["job_latency"]["jobs"]
        )
        lines += [
            "Both sides ran the same sizes." if same else "The sides ran different sizes: compare rates, not totals.",
            "",
        ]
    return "\n".join(lines)


def requests_paragraph(lat: dict[str, Any], t: dict[str, Any]) -> list[str]:
    """What kube-apiserver counted (all clients), and the re-applies of unchanged objects if they show."""
    per_job, during = lat.get("api_requests_per_job"), t.get("api_requests")
    if not per_job or not during:
        return []
    top = ", ".join(f"{k} {v:.0f}" for k, v in list(per_job["top"].items())[:6])
    applies = per_job["top"].get("APPLY deployments", 0) + per_job["top"].get("APPLY services", 0)
    specialists = lat["jobs"] + 1
    text = (
        f"API requests (kube-apiserver's apiserver_request_total, every client: operator, controllers, scheduler, "
        f"kwok, this benchmark's polling): {per_job['total']:.0f} per job ({top}); "
        f"{during['total']:.0f} during the throughput run ({t.get('api_requests_per_second', 0):.0f}/s), of which "
        f"{during['top'].get('APPLY deployments', 0):.0f} APPLY deployments and "
        f"{during['top'].get('APPLY services', 0):.0f} APPLY services besides the "
        f"{during['top'].get('POST deployments', 0):.0f} + {during['top'].get('POST services', 0):.0f} creations."
    )
    if applies >= 2 * specialists:
        text += (
            f" The {applies:.0f} server-side applies per job are about every Deployment and Service of the "
            f"{specialists}-specialist pool at every pool reconcile the job sets off: on the real server the operator "
            "re-applies objects that did not change. Likely cause (checked against this kube-apiserver): items of a "
            "real LIST of built-in resources carry no apiVersion/kind, which the desired bodies set, so "
            "swarm.operator.kube.converge's `contains(live, desired)` never holds; the emulator's lists return the "
            "stored bodies with them, so it skips those applies. That probably accounts for much of the time "
            "between the specialist's scale-up and the trainer pod's creation in the latency breakdown (not "
            "measured separately)."
        )
    return [text, ""]


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sides = [(n, report.get(n) or {}) for n in ("emulator", "real")]
    sides = [(n, s) for n, s in sides if "job_latency" in s]
    if not sides:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(sides)
    for k, (name, side) in enumerate(sides):
        lat, thr = side["job_latency"], side["throughput"]
        xs = [i + k * width for i in range(3)]
        bars = left.bar(xs, [lat["median_s"] * 1000, lat["p90_s"] * 1000, lat["max_s"] * 1000], width, label=name)
        left.bar_label(bars, fmt="%.0f", fontsize=8)
        bars = right.bar(
            [i + k * width for i in range(2)], [thr["pools_per_second"], thr["objects_per_second"]], width,
            label=f"{name}: {thr['nodes']} nodes x {thr['pools']} pools",
        )  # fmt: skip
        right.bar_label(bars, fmt="%.1f", fontsize=8)
    left.set_xticks([i + width * (len(sides) - 1) / 2 for i in range(3)], ["median", "p90", "max"])
    left.set_ylabel("ms")
    left.set_title("SwarmJob -> all objects")
    right.set_xticks([i + width * (len(sides) - 1) / 2 for i in range(2)], ["pools/s", "objects/s"])
    right.set_title("reconcile throughput")
    for axis in (left, right):
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def pending_main(args: argparse.Namespace) -> None:
    """--pending-jobs: run real_pending_jobs for each count and merge its rows into the report at args.out."""
    counts = [int(c) for c in args.pending_jobs.split(",") if c.strip()]
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.setdefault("run_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    report.setdefault("quick", False)
    report.setdefault("machine", machine())
    with tempfile.TemporaryDirectory() as tmp:
        rows = pending_side(Path(tmp), counts, args.label)
    fresh = {(r["label"], r["pending"]) for r in rows}
    kept = [r for r in report.get("pending_jobs", []) if (r.get("label", ""), r["pending"]) not in fresh]
    report["pending_jobs"] = sorted([*kept, *rows], key=lambda r: (r["pending"], r.get("run_at", "")))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print("\n".join(pending_table(report["pending_jobs"])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes on both sides (smoke run)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--real", action="store_true", help="only the real control plane side")
    only.add_argument("--emulator", action="store_true", help="only the emulated API side")
    parser.add_argument("--real-nodes", type=int, help="real side: kwok nodes of the throughput run (default 1000)")
    parser.add_argument("--real-pools", type=int, help="real side: pools of the throughput run (default 100)")
    parser.add_argument("--note", default="", help="a remark on the run (e.g. other load) for the reports")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_operator.json")
    parser.add_argument(
        "--pending-jobs",
        help="only the pending-jobs workload on the real control plane, for these counts (e.g. 0,100,1000); its "
        "rows are merged into the existing report (same label and count replaced)",
    )
    parser.add_argument("--label", default="", help="names the code measured in the pending-jobs rows")
    args = parser.parse_args(argv)
    if args.pending_jobs is not None:
        pending_main(args)
        return
    for size, key in ((args.real_nodes, 1), (args.real_pools, 2)):
        if size is not None:
            for mode in SIZES["real"].values():
                mode[key] = size
    previous: dict[str, Any] = {}
    if args.out.exists():
        try:
            previous = json.loads(args.out.read_text())
        except ValueError:
            previous = {}
    report: dict[str, Any] = {
        "run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "note": args.note,
    }
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (("emulator", emulator_side), ("real", real_side)):
            if (args.real and name == "emulator") or (args.emulator and name == "real"):
                kept = previous.get(name)
                if isinstance(kept, dict) and "job_latency" in kept:
                    report[name] = {**kept, "carried_over": True, "run_at": kept.get("run_at", previous.get("run_at"))}
                continue
            print(f"== {name} side", flush=True)
            workdir = Path(tmp) / name
            workdir.mkdir()
            try:
                report[name] = {**run(workdir, args.quick), "run_at": report["run_at"], "quick": args.quick}
            except Exception as exc:  # a broken side is reported; the other side's numbers are still written
                report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                print(report[name]["traceback"], file=sys.stderr, flush=True)
                failed = True
            if report[name].get("skipped"):
                print(f"{name} side skipped: {report[name]['skipped']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    plotted = plot(report, args.out.with_suffix(".png"))
    print("\n".join(table(report)))
    for name in ("emulator", "real"):
        if (report.get(name) or {}).get("error"):
            print(f"{name} side failed: {report[name]['error']}", file=sys.stderr)
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}" + (f", {args.out.with_suffix('.png')}" if plotted else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
