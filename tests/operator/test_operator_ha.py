"""The operator's production behaviour as a process against the emulator: leader election between replicas
(one reconciles, a standby takes over when the leader dies or steps down), metrics and probes, Normal events."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from swarm.operator.builders import specialist_object_name
from swarm.operator.kube import EVENTS, LEASES
from swarm.testing.emulator import (
    DEPLOYMENTS,
    JOBS,
    PODS,
    POOLS,
    EmulatedCluster,
    OperatorProcess,
    free_port,
    job_body,
    pool_body,
    wait_for,
)

NS = "swarm"
LEASE_DURATION = 4
pytestmark = pytest.mark.timeout(90)


def metrics(op: OperatorProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, text = op.http_get("/metrics")
    assert code == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def lease_holder(cluster: EmulatedCluster) -> str | None:
    return ((cluster.get(LEASES, NS, "swarm-operator") or {}).get("spec") or {}).get("holderIdentity")


def replica(cluster: EmulatedCluster, identity: str) -> OperatorProcess:
    return OperatorProcess(
        cluster,
        NS,
        name=identity,
        args=("--lease-duration", str(LEASE_DURATION)),
        metrics_port=free_port(),
        extra_env={"POD_NAME": identity},
    )


def test_only_the_leader_reconciles_and_a_standby_takes_over(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.create(POOLS, pool_body())
    a, b, c = replica(cluster, "op-a"), replica(cluster, "op-b"), replica(cluster, "op-c")
    with a, b:
        wait_for(lambda: lease_holder(cluster) in {"op-a", "op-b"}, what=f"a leader\n{a.log()}\n{b.log()}")
        leader, standby = (a, b) if lease_holder(cluster) == "op-a" else (b, a)
        wait_for(lambda: (cluster.get(POOLS, NS, "pool") or {}).get("status"), what=f"pool status\n{leader.log()}")
        wait_for(lambda: "standing by" in standby.log(), what=f"standby\n{standby.log()}")
        wait_for(lambda: leader.http_get("/readyz")[0] == 200, what="leader ready")
        assert standby.http_get("/healthz")[0] == 200 and standby.http_get("/readyz")[0] == 503
        ran = value(metrics(leader), "swarm_operator_reconciles_total", kind="SpecialistPool", result="success")
        assert ran and ran >= 1 and value(metrics(leader), "swarm_operator_leader") == 1
        standby_metrics = metrics(standby)
        assert value(standby_metrics, "swarm_operator_leader") == 0
        assert not any(name == "swarm_operator_reconciles_total" for name, _ in standby_metrics)
        assert "Handler '" not in standby.log() and "acquired" not in standby.log()

        leader.kill()  # SIGKILL: the Lease is not released and must expire
        killed = time.monotonic()
        wait_for(lambda: lease_holder(cluster) == standby.log_path.stem, timeout=4 * LEASE_DURATION, what="takeover")
        took = time.monotonic() - killed
        assert LEASE_DURATION / 3 < took < 2 * LEASE_DURATION + 1, took
        lease = cluster.get(LEASES, NS, "swarm-operator")
        assert lease["spec"]["leaseTransitions"] == 1 and lease["spec"]["leaseDurationSeconds"] == LEASE_DURATION
        cluster.patch(POOLS, NS, "pool", {"spec": {"warm": ["a", "b"]}})
        wait_for(
            lambda: (cluster.get(DEPLOYMENTS, NS, specialist_object_name("pool", "b")) or {}).get("spec", {})
            .get("replicas")
            == 1,
            what=f"the new leader reconciles\n{standby.log()}",
        )
        wait_for(lambda: standby.http_get("/readyz")[0] == 200, what="new leader ready")

        with c:
            wait_for(lambda: "standing by" in c.log(), what=f"third replica standing by\n{c.log()}")
            standby.stop()  # SIGTERM: kopf stops, the Lease is released
            stopped = time.monotonic()
            assert standby.proc is not None and standby.proc.returncode == 0
            assert "released lease" in standby.log()
            wait_for(lambda: lease_holder(cluster) == "op-c", timeout=2 * LEASE_DURATION, what=f"handover\n{c.log()}")
            assert time.monotonic() - stopped < LEASE_DURATION / 2  # released: no waiting for expiry
            wait_for(lambda: c.http_get("/readyz")[0] == 200, what="third replica ready")


def test_a_leader_whose_lease_was_taken_exits_at_once(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.create(POOLS, pool_body())
    with replica(cluster, "op-a") as op:
        wait_for(lambda: op.http_get("/readyz")[0] == 200, what=f"leader ready\n{op.log()}")
        cluster.patch(LEASES, NS, "swarm-operator", {"spec": {"holderIdentity": "intruder"}})
        assert op.proc is not None
        wait_for(lambda: op.proc.poll() is not None, timeout=2 * LEASE_DURATION, what=f"exit\n{op.log()}")
        assert op.proc.returncode == 1 and "lost the leader lease (lease taken by intruder)" in op.log()
        assert lease_holder(cluster) == "intruder"  # not released: it was not its own any more


def test_metrics_and_normal_events(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.ready_deployments()
    cluster.create(POOLS, pool_body())
    with OperatorProcess(cluster, NS, metrics_port=free_port()) as op:
        wait_for(lambda: op.http_get("/readyz")[0] == 200, what=f"ready\n{op.log()}")
        st = wait_for(
            lambda: (
                (cluster.get(POOLS, NS, "pool") or {}).get("status", {}).get("gpuUsage")
                and cluster.get(POOLS, NS, "pool")["status"]
            )
        )
        pool = {"namespace": NS, "pool": "pool"}
        samples = wait_for(
            lambda: (m := metrics(op)) and value(m, "swarm_pool_capacity_bytes", **pool) == st["capacityBytes"] and m,
            what="pool gauges",
        )
        assert value(samples, "swarm_pool_resident_bytes", **pool) == st["residentBytes"]
        assert value(samples, "swarm_pool_gpu_used_bytes", **pool, node="gpu-1", gpu="0") == st["residentBytes"]
        states = {s: value(samples, "swarm_pool_specialists", **pool, state=s) for s in ("warm", "cold", "overbudget")}
        assert states == {"warm": 1, "cold": 2, "overbudget": 0}
        assert value(samples, "swarm_operator_reconcile_duration_seconds_count", kind="SpecialistPool")

        pool_uid = cluster.get(POOLS, NS, "pool")["metadata"]["uid"]
        cluster.create(JOBS, job_body())  # asks for the cold specialist b
        wait_for(lambda: cluster.get(PODS, NS, "job-primary"), what=f"trainer pod\n{op.log()}")
        job_uid = cluster.get(JOBS, NS, "job")["metadata"]["uid"]

        def normal_events() -> list[tuple[str, str, str]]:
            return [
                (e["reason"], e["involvedObject"]["kind"], e["involvedObject"]["uid"])
                for e in cluster.list(EVENTS, NS)
                if e.get("type") == "Normal"
            ]

        wait_for(lambda: ("TrainerPodCreated", "SwarmJob", job_uid) in normal_events(), what=str(normal_events()))
        scaled_up = [e for e in normal_events() if e[0] == "ScaledUp"]
        assert scaled_up == [("ScaledUp", "SpecialistPool", pool_uid)] * 2  # a at the start, b for the job
        cluster.patch(PODS, NS, "job-primary", {"status": {"phase": "Succeeded"}}, status=True)
        wait_for(lambda: ("ScaledDown", "SpecialistPool", pool_uid) in normal_events(), what=str(normal_events()))
        assert normal_events().count(("TrainerPodCreated", "SwarmJob", job_uid)) == 1
        messages = [e["message"] for e in cluster.list(EVENTS, NS) if e["reason"] == "ScaledDown"]
        deployment = specialist_object_name("pool", "b")
        assert messages == [f"specialist b: Deployment {deployment} scaled from 1 to 0 replicas"]
        done = metrics(op)
        assert (value(done, "swarm_operator_reconciles_total", kind="SwarmJob", result="success") or 0) >= 1
