"""A running job's claims on the real control plane (issue #31, defects 1, 2, 3 and the waiting log of 5): the
trainer's GPU memory is in the plan, a job is granted only what it asked for plus the warm set, what it holds is
kept or it is told, and its trainer pod waits for its specialists to be ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from status_conditions import find_condition
from test_lifecycle import JOB, replicas, set_reserve, start_job
from test_real_cluster import TRAINER_PODS, job_status, pods, pool_status, ready_condition, running, sample

from swarm.operator import budget, builders
from swarm.operator.models import ConditionReason, ConditionType
from swarm.testing.control_plane import ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import APPS, CORE, NS, SWARM, apply_sample, gpu_node, operator_process

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
GIB = 1024**3
RTX_4090_BYTES = 25757220864


def warnings(plane: ControlPlane, job: str) -> list[tuple[str, str]]:
    """(reason, message) of the Warning events on SwarmJob `job`."""
    return [
        (e["reason"], e["message"])
        for e in plane.list(CORE, "events", NS)
        if e.get("type") == "Warning" and e["involvedObject"].get("kind") == "SwarmJob"
        and e["involvedObject"].get("name") == job
    ]  # fmt: skip


def condition_is(plane: ControlPlane, job: str, type_: ConditionType, status: str, reason: str) -> dict[str, Any]:
    """The job's status once its condition `type_` has `status` and `reason` ({} before)."""
    found = job_status(plane, job)
    cond = find_condition(found, type_)
    return found if (cond.get("status"), cond.get("reason")) == (status, reason) else {}


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}


def big_pool(plane: ControlPlane, resident: int) -> None:
    """A second pool on the same GPUs whose one warm specialist holds `resident` bytes."""
    doc = sample("specialistpool.yaml")
    doc["metadata"]["name"] = "big"
    commerce = next(s for s in doc["spec"]["specialists"] if s["name"] == "commerce")
    doc["spec"]["specialists"] = [{**commerce, "name": "huge", "residentBytes": resident}]
    doc["spec"]["warm"] = ["huge"]
    plane.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))


# ---------------------------------------------------------------------------------------------- 1
def test_a_job_waits_until_its_trainer_fits_beside_its_specialists(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    """One 24 GiB GPU: sotab's warm set and another pool's 17 GiB specialist leave less than the 6 GiB a trainer
    asks. The job is not admitted (its specialist stays cold, no trainer pod left Pending), it says why at INFO with a
    Warning event; once the other pool goes it starts, its trainer pinned to the GPU and counted in gpuUsage."""
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="sotab Ready")
    big_pool(cluster, 17 * GIB)
    cluster.wait_for(
        lambda: ready_condition(pool_status(cluster, "big")).get("status") == "True",
        what=f"pool big Ready\n{operator.log()}",
    )
    apply_sample(cluster, "swarmjob.yaml")
    status = cluster.wait_for(
        lambda: condition_is(
            cluster, JOB, ConditionType.SpecialistsGranted, "False", ConditionReason.BudgetExceeded
        ),
        what=f"the job waiting for budget\n{job_status(cluster, JOB)}\n{operator.log()}",
    )
    message = find_condition(status, ConditionType.SpecialistsGranted)["message"]
    assert "the trainer (6144 MiB)" in message and "people" in message, message
    assert status["phase"] == "Pending" and not pods(cluster, TRAINER_PODS)
    assert replicas(cluster)["people"] == 0  # not scaled up for a job that cannot run
    over = find_condition(pool_status(cluster), ConditionType.BudgetExceeded)
    assert over["status"] == "True" and f"the trainer of {JOB}" in over["message"], over
    cluster.wait_for(
        lambda: any(r == ConditionReason.BudgetExceeded for r, _ in warnings(cluster, JOB)),
        what=f"a Warning event on the job\n{cluster.list(CORE, 'events', NS)}",
    )
    log = operator.log()
    waits = [line for line in log.splitlines() if "waiting for GPU memory budget" in line]
    assert waits and not [line for line in waits if "ERROR" in line], waits[:3]

    cluster.delete(SWARM, "specialistpools", "big", NS)
    pod = cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what=f"trainer running\n{operator.log()}")[0]
    assert pod["spec"]["nodeSelector"][builders.HOSTNAME_LABEL] == "gpu-1" and pod["spec"]["nodeName"] == "gpu-1"
    assert env_of(pod)[builders.VISIBLE_DEVICES_ENV] == "0"
    status = cluster.wait_for(lambda: (s := job_status(cluster, JOB)).get("phase") == "Running" and s, what="Running")
    assert (status["trainerNode"], status["trainerGpu"]) == ("gpu-1", 0)
    pool = cluster.wait_for(
        lambda: (s := pool_status(cluster)) and sum(u["bytes"] for u in s["gpuUsage"]) > s["residentBytes"] and s,
        what="the trainer counted in gpuUsage",
    )
    assert sum(u["bytes"] for u in pool["gpuUsage"]) == pool["residentBytes"] + 6 * GIB
    assert next(s for s in pool["specialists"] if s["name"] == "people")["replicas"] == 1


# ---------------------------------------------------------------------------------------------- 2
def test_a_running_job_is_granted_warm_specialists_never_another_jobs(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    start_job(cluster, operator)  # sotab-train asks for people
    other = sample("swarmjob.yaml", specialists=["numeric"])  # granted up to 3: people came before temporal
    other["metadata"]["name"] = "other"
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(other))
    status = cluster.wait_for(
        lambda: (s := job_status(cluster, "other")).get("phase") == "Running" and s,
        what=f"the other job Running\n{operator.log()}",
    )
    assert status["specialists"] == ["geographic", "numeric", "temporal"]
    trainer = cluster.get(CORE, "pods", builders.trainer_pod_name("other"), NS)
    endpoints = env_of(trainer)["SWARM_SPECIALIST_ENDPOINTS"]
    assert "people" not in endpoints and "temporal" in endpoints, endpoints


def test_removing_a_running_jobs_specialist_from_its_pool_tells_the_job(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    start_job(cluster, operator)
    pool = sample("specialistpool.yaml", idleTimeoutSeconds=0)
    pool["spec"]["specialists"] = [s for s in pool["spec"]["specialists"] if s["name"] != "people"]
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(pool))
    status = cluster.wait_for(
        lambda: condition_is(cluster, JOB, ConditionType.SpecialistsGranted, "False", ConditionReason.SpecialistLost),
        what=f"SpecialistLost\n{job_status(cluster, JOB)}\n{operator.log()}",
    )
    assert "people" in find_condition(status, ConditionType.SpecialistsGranted)["message"]
    assert find_condition(status, ConditionType.SpecialistsReady)["status"] == "False"
    assert status["phase"] == "Running"
    lost = cluster.wait_for(
        lambda: [m for r, m in warnings(cluster, JOB) if r == ConditionReason.SpecialistLost],
        what="a SpecialistLost Warning event",
    )
    assert len(lost) == 1 and "people" in lost[0]


def test_a_loss_past_the_grace_period_fails_the_job(cluster: ControlPlane, tmp_path: Path) -> None:
    """The grace policy (held.py): with a 3 s grace, a running job whose specialist was removed from its pool is
    Failed (SpecialistLost) and its trainer pod deleted, instead of running on without it indefinitely."""
    with operator_process(cluster, tmp_path / "operator.log", SWARM_SPECIALIST_LOSS_GRACE_SECONDS="3") as op:
        trainer = start_job(cluster, op)
        pool = sample("specialistpool.yaml", idleTimeoutSeconds=0)
        pool["spec"]["specialists"] = [s for s in pool["spec"]["specialists"] if s["name"] != "people"]
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(pool))
        status = cluster.wait_for(
            lambda: (s := job_status(cluster, JOB)).get("phase") == "Failed" and s,
            timeout=60,
            what=f"the job Failed past the grace\n{job_status(cluster, JOB)}\n{op.log()}",
        )
        complete = find_condition(status, ConditionType.Complete)
        assert (complete["status"], complete["reason"]) == ("False", ConditionReason.SpecialistLost)
        assert "people" in complete["message"] and "lost for over 3 s" in complete["message"]
        name = trainer["metadata"]["name"]
        cluster.wait_for(lambda: cluster.get(CORE, "pods", name, NS) is None, what="the trainer pod deleted")


def test_deleting_a_running_jobs_pool_tells_the_job_and_a_new_pool_re_grants(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    start_job(cluster, operator)
    cluster.delete(SWARM, "specialistpools", "sotab", NS)
    status = cluster.wait_for(
        lambda: condition_is(cluster, JOB, ConditionType.PoolReady, "False", ConditionReason.PoolDeleted),
        what=f"PoolDeleted\n{job_status(cluster, JOB)}\n{operator.log()}",
    )
    assert find_condition(status, ConditionType.SpecialistsGranted)["reason"] == ConditionReason.SpecialistLost
    assert status["phase"] == "Running"  # the trainer decides: the job is told, not failed
    cluster.wait_for(
        lambda: any(r == ConditionReason.PoolDeleted for r, _ in warnings(cluster, JOB)), what="a Warning event"
    )
    cluster.wait_for(lambda: not cluster.list(APPS, "deployments", NS), what="the pool's children collected")
    # The pool comes back: the running job's claim (what it was granted) is planned first, its conditions recover.
    apply_sample(cluster, "specialistpool.yaml", warm=[])
    status = cluster.wait_for(
        lambda: condition_is(cluster, JOB, ConditionType.SpecialistsReady, "True", ConditionReason.AllReady),
        what=f"re-granted\n{job_status(cluster, JOB)}\n{operator.log()}",
    )
    assert find_condition(status, ConditionType.PoolReady)["status"] == "True"
    assert find_condition(status, ConditionType.SpecialistsGranted)["status"] == "True"
    names = [s["name"] for s in sample("specialistpool.yaml")["spec"]["specialists"]]
    expected = {n: int(n in status["specialists"]) for n in names}
    # The re-created pool's Deployments appear one reconcile step after another: wait for all of them.
    cluster.wait_for(lambda: replicas(cluster) == expected, what="the granted specialists scaled up")
    assert status["specialists"] == ["geographic", "people", "temporal"]


def test_a_reserve_of_the_whole_gpu_never_evicts_a_running_job(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    # The warm pair ready before the job comes: it is granted them too (a job granted before they are ready gets
    # only what it asked for, which start_job's timing left to chance).
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml", idleTimeoutSeconds=0)
    cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="sotab Ready")
    apply_sample(cluster, "swarmjob.yaml")
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Running", what=f"job Running\n{operator.log()}")
    set_reserve(cluster, operator, RTX_4090_BYTES)
    status = job_status(cluster, JOB)
    held = status["specialists"]
    assert held == ["geographic", "people", "temporal"]  # asked for people, granted the ready warm pair too
    rows = {r["name"]: r for r in pool_status(cluster)["specialists"]}
    assert {n: r["replicas"] for n, r in rows.items()} == {n: int(n in held) for n in rows}
    planned = {n: int(n in held) for n in rows}
    cluster.wait_for(lambda: replicas(cluster) == planned, what="the Deployments follow the plan")
    assert status["phase"] == "Running"
    assert find_condition(status, ConditionType.SpecialistsGranted)["status"] == "True"
    usage = sum(u["bytes"] for u in pool_status(cluster)["gpuUsage"])
    assert usage == sum(rows[n]["residentBytes"] for n in held) + 6 * GIB  # what the job holds, nothing else


# ---------------------------------------------------------------------------------------------- 3
def test_the_trainer_pod_waits_for_its_specialists_to_be_ready(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    """The operator's budget (fallbackCapacity: 24 GiB) admits people, but the node advertises only 2,000 MiB to
    the scheduler: the warm pair fits, people stays Unschedulable. No trainer pod until it is ready."""
    gpu_node(cluster, "gpu-1", mib=2000)
    apply_sample(cluster, "specialistpool.yaml")
    apply_sample(cluster, "swarmjob.yaml")
    status = cluster.wait_for(
        lambda: condition_is(cluster, JOB, ConditionType.SpecialistsReady, "False", ConditionReason.NotReady)
        and "Insufficient" in find_condition(job_status(cluster, JOB), ConditionType.SpecialistsReady)["message"]
        and job_status(cluster, JOB),
        what=f"waiting for people\n{job_status(cluster, JOB)}\n{operator.log()}",
    )
    assert status["phase"] == "Pending" and not pods(cluster, TRAINER_PODS)
    assert find_condition(status, ConditionType.SpecialistsGranted)["status"] == "True"
    assert replicas(cluster)["people"] == 1
    full = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "1", budget.GPU_MEMORY_RESOURCE: "24564"}
    cluster.patch(CORE, "nodes", "gpu-1", {"status": {"capacity": full, "allocatable": full}}, sub="status")
    cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what=f"trainer running\n{operator.log()}")
    status = cluster.wait_for(lambda: (s := job_status(cluster, JOB)).get("phase") == "Running" and s, what="Running")
    assert find_condition(status, ConditionType.SpecialistsReady)["status"] == "True"
