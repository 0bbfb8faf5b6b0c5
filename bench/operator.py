"""Operator benchmark: the real `swarm operator` process against the in-process emulated Kubernetes API.

1. Job latency: time from creating a SwarmJob (which requests a cold specialist) to all of its objects existing:
   the trainer pod, the specialist scaled from zero, and the job's status naming the pod.
2. Handler throughput at scale: 1000 nodes (half of them RTX 4090 nodes with NVML readings) and 100 pools of
   4 specialists: time until every pool has its first status, i.e. pools reconciled per second, with the
   Deployments and Services created.

Writes reports/bench_operator.json and prints a table. Usage: .venv/bin/python bench/operator.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The emulated API is test code (tests/operator/emulator.py), not part of the installed package.
sys.path.insert(0, str(ROOT / "tests" / "operator"))

from emulator import (  # noqa: E402
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

NS = "bench"


def node(index: int, gpu: bool) -> dict[str, Any]:
    return gpu_node(f"node-{index}", total=RTX_4090_TOTAL if gpu else None)


def pool(name: str, specialists: int = 4) -> dict[str, Any]:
    names = tuple(f"s{i}" for i in range(specialists))
    return pool_body(name, names=names, warm=names[:1], namespace=NS, idleTimeoutSeconds=3600)


def job_latency(workdir: Path, jobs: int) -> dict[str, Any]:
    with EmulatedCluster(workdir) as cluster:
        cluster.create(NODES, node(0, gpu=True))
        cluster.create(POOLS, pool("p", specialists=jobs + 1))
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
                wait_for(
                    lambda i=i: (
                        cluster.get(PODS, NS, f"j{i}-primary")
                        and cluster.get(DEPLOYMENTS, NS, f"p-s{i + 1}")["spec"]["replicas"] == 1
                        and (cluster.get(JOBS, NS, f"j{i}") or {}).get("status", {}).get("pods")
                    ),
                    timeout=60,
                    interval=0.005,
                    what=f"job j{i} objects",
                )
                samples.append(time.perf_counter() - started)
    ordered = sorted(samples)
    return {
        "jobs": jobs,
        "median_s": statistics.median(samples),
        "p95_s": ordered[int(0.95 * (len(ordered) - 1))],
        "max_s": ordered[-1],
    }


def throughput(workdir: Path, nodes: int, pools: int) -> dict[str, Any]:
    with EmulatedCluster(workdir) as cluster:
        for i in range(nodes):
            cluster.create(NODES, node(i, gpu=i % 2 == 0))
        for i in range(pools):
            cluster.create(POOLS, pool(f"p{i}"))
        with OperatorProcess(cluster, NS, resync=3600) as op:
            started = time.perf_counter()

            def reconciled() -> bool:
                return all((p.get("status") or {}).get("observedGeneration") for p in cluster.list(POOLS, NS))

            wait_for(reconciled, timeout=150, interval=0.2, what=f"all pools reconciled\n{op.log()[-2000:]}")
            elapsed = time.perf_counter() - started
            statuses = [p["status"] for p in cluster.list(POOLS, NS)]
            deployments = len(cluster.list(DEPLOYMENTS, NS))
    return {
        "nodes": nodes,
        "pools": pools,
        "seconds_to_all_pools_reconciled": elapsed,
        "pools_per_second": pools / elapsed,
        "deployments": deployments,
        "gpus_seen_per_pool": statistics.mean(s["gpus"] for s in statuses),
        "spawn_budget_per_pool": statistics.mean(s["spawnBudget"] for s in statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_operator.json")
    args = parser.parse_args()
    jobs, nodes, pools = (3, 50, 10) if args.quick else (10, 1000, 100)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        latency = job_latency(Path(tmp) / "a", jobs)
        scale = throughput(Path(tmp) / "b", nodes, pools)
    report = {
        "job_latency": latency,
        "throughput": scale,
        "note": "kopf operator subprocess vs. kmock-based emulated API on loopback",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        ("SwarmJob -> all objects, median", f"{latency['median_s'] * 1000:.0f} ms"),
        ("SwarmJob -> all objects, p95", f"{latency['p95_s'] * 1000:.0f} ms"),
        (f"{pools} pools x {nodes} nodes: all reconciled", f"{scale['seconds_to_all_pools_reconciled']:.1f} s"),
        ("pool reconciles per second", f"{scale['pools_per_second']:.1f}"),
        ("deployments created", str(scale["deployments"])),
        ("GPUs counted per pool", f"{scale['gpus_seen_per_pool']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
