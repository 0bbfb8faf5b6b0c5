"""The planner places only where nodes can take the pods (issue #31, defect 4), on the real control plane: a cordoned
and drained node's specialists are placed anew elsewhere, a running job's are left where they run, a CPU node never
counts as a GPU, an empty nodeSelector is refused, and CPU and memory requests bound what is admitted."""

from __future__ import annotations

import json

import pytest
import yaml
from status_conditions import find_condition
from test_lifecycle import JOB, replicas, start_job
from test_real_cluster import SPECIALIST_PODS, TRAINER_PODS, job_status, pods, pool_status, ready_condition, sample

from swarm.operator import builders
from swarm.operator.models import GPU_PRODUCT_LABEL, RTX_4090_PRODUCT, ConditionReason, ConditionType
from swarm.operator.nodes import GPU_MEMORY_RESOURCE
from swarm.testing.control_plane import ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import NS, RTX_4090_MIB, apply_sample, gpu_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
WARM = ("geographic", "temporal")


def placed(plane: ControlPlane) -> dict[str, tuple[str, str]]:
    """specialist -> (node, phase) of its pods that are not being deleted."""
    return {
        p["metadata"]["labels"][builders.LABEL_SPECIALIST]: (p["spec"].get("nodeName", ""), p["status"].get("phase"))
        for p in pods(plane, SPECIALIST_PODS)
        if not p["metadata"].get("deletionTimestamp")
    }


def uids(plane: ControlPlane, selector: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(plane, selector)}


def running_on(plane: ControlPlane, node: str, names: tuple[str, ...]) -> bool:
    where = placed(plane)
    rows = {r["name"]: r for r in pool_status(plane).get("specialists", [])}
    return all(where.get(n) == (node, "Running") and rows[n].get("node") == node for n in names)


def wait_running_on(plane: ControlPlane, op: OperatorProcess, node: str, names: tuple[str, ...]) -> None:
    """Wait up to 30 s for `names` to run on `node`; else fail with where their pods are then."""
    try:
        plane.wait_for(lambda: running_on(plane, node, names), timeout=30, what=f"{', '.join(names)} on {node}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; specialist pods (node, phase): {placed(plane)}\n{op.log()}") from None


def test_a_cordoned_and_drained_node_gets_no_specialists_back(cluster: ControlPlane, operator: OperatorProcess) -> None:
    """Before: the warm specialists were pinned back to the drained node (Pending for as long as it stayed cordoned,
    with a free GPU on the other node)."""
    gpu_node(cluster, "gpu-1")
    gpu_node(cluster, "gpu-2")
    apply_sample(cluster, "specialistpool.yaml")
    cluster.wait_for(lambda: running_on(cluster, "gpu-1", WARM), what=f"warm set on gpu-1\n{operator.log()}")
    cluster.kubectl("cordon", "gpu-1")
    cluster.kubectl(
        "drain", "gpu-1", "--ignore-daemonsets", "--delete-emptydir-data", "--grace-period=0", "--timeout=60s"
    )
    wait_running_on(cluster, operator, "gpu-2", WARM)
    status = cluster.wait_for(
        lambda: (s := pool_status(cluster)) and ready_condition(s).get("status") == "True" and s, what="pool Ready"
    )
    assert {(u["node"], u["index"]) for u in status["gpuUsage"]} == {("gpu-2", 0)}
    assert ready_condition(status)["message"].endswith("; taking no new pods: gpu-1 (cordoned)")


def test_a_running_jobs_specialists_stay_on_a_cordoned_node(cluster: ControlPlane, operator: OperatorProcess) -> None:
    """Cordoned, not drained: what the running job holds (its specialist and the warm set it was granted) keeps
    running where it is (re-placing it would restart it under the trainer); a specialist made warm afterwards, which
    no job holds, goes to the other node (before: pinned to the cordoned one, Pending)."""
    trainer = start_job(cluster, operator)
    held = (*WARM, "people")
    assert job_status(cluster, JOB)["specialists"] == sorted(held)  # granted the warm pair (start_job waits for it)
    # The job runs once they are ready; the pool's status rows may follow one reconcile later.
    wait_running_on(cluster, operator, "gpu-1", held)
    before = uids(cluster, SPECIALIST_PODS)
    gpu_node(cluster, "gpu-2")
    cluster.kubectl("cordon", "gpu-1")
    cluster.kubectl(
        "patch", "specialistpool", "sotab", "-n", NS, "--type=merge", "-p",
        json.dumps({"spec": {"warm": [*WARM, "media"]}}),
    )  # fmt: skip
    wait_running_on(cluster, operator, "gpu-2", ("media",))
    wait_running_on(cluster, operator, "gpu-1", held)  # (says where they are if they moved)
    assert {n: u for n, u in uids(cluster, SPECIALIST_PODS).items() if "media" not in n} == before
    assert uids(cluster, TRAINER_PODS) == {trainer["metadata"]["name"]: trainer["metadata"]["uid"]}
    assert job_status(cluster, JOB)["phase"] == "Running"


def test_a_cpu_node_is_no_gpu_even_with_fallback_capacity(cluster: ControlPlane, operator: OperatorProcess) -> None:
    """A selector every node matches, a fallbackCapacity and one CPU node (no GPU-memory resource): no GPU."""
    cluster.add_gpu_node("cpu-1")  # a plain kwok node: no GPU label, capacity or taint
    apply_sample(cluster, "specialistpool.yaml", nodeSelector={"kubernetes.io/os": "linux"})
    status = cluster.wait_for(
        lambda: (s := pool_status(cluster)) and s.get("observedGeneration") == 1 and s,
        what=f"pool planned\n{operator.log()}",
    )
    assert (status["gpus"], status["spawnBudget"], status["capacityBytes"]) == (0, 0, 0)
    assert ready_condition(status)["reason"] == ConditionReason.NoCapacity
    assert f"cpu-1 (no {GPU_MEMORY_RESOURCE} allocatable)" in ready_condition(status)["message"]
    assert not any(replicas(cluster).values())


def test_an_empty_node_selector_is_refused(cluster: ControlPlane) -> None:
    doc = sample("specialistpool.yaml", nodeSelector={})
    with pytest.raises(RuntimeError, match="nodeSelector"):
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))


@pytest.mark.parametrize(("resource", "amount"), [("cpu", "2"), ("memory", "9Gi")])
def test_cpu_and_memory_requests_bound_the_warm_set(
    cluster: ControlPlane, operator: OperatorProcess, resource: str, amount: str
) -> None:
    """Nine warm specialists at 1 CPU and 4 GiB each fit the GPU's memory; the node has 2 CPUs (or 9 GiB): two are
    admitted, the rest are over budget, and no pod waits on `Insufficient cpu` (before: nine admitted, seven
    Pending)."""
    cluster.add_gpu_node(
        "gpu-1",
        labels={GPU_PRODUCT_LABEL: RTX_4090_PRODUCT},
        capacity={builders.GPU_RESOURCE: "1", GPU_MEMORY_RESOURCE: str(RTX_4090_MIB), resource: amount},
        taints=[{"key": builders.GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}],
    )
    names = [s["name"] for s in sample("specialistpool.yaml")["spec"]["specialists"]]
    apply_sample(cluster, "specialistpool.yaml", warm=names)
    status = cluster.wait_for(
        lambda: (s := pool_status(cluster)) and s.get("observedGeneration") == 1 and s,
        what=f"pool planned\n{operator.log()}",
    )
    assert status["spawnBudget"] == 2
    assert sum(replicas(cluster).values()) == 2
    cluster.wait_for(
        lambda: sorted(phase for _, phase in placed(cluster).values()) == ["Running", "Running"],
        what="two specialists running",
    )
    over = find_condition(pool_status(cluster), ConditionType.BudgetExceeded)
    assert over["status"] == "True" and "not admitted" in over["message"]
    assert all(p["status"].get("phase") == "Running" for p in pods(cluster, SPECIALIST_PODS))


def test_another_pools_specialists_take_their_cpu(cluster: ControlPlane, operator: OperatorProcess) -> None:
    """A node with 2 CPUs; pool `sotab` runs one warm specialist (1 CPU), then pool `second` in the same namespace
    asks for two warm ones: it admits one, says the other is over budget, and no pod waits on `Insufficient cpu`
    (before: `second` planned against the whole 2 CPUs and its second pod stayed Pending)."""
    cluster.add_gpu_node(
        "gpu-1",
        labels={GPU_PRODUCT_LABEL: RTX_4090_PRODUCT},
        capacity={builders.GPU_RESOURCE: "1", GPU_MEMORY_RESOURCE: str(RTX_4090_MIB), "cpu": "2"},
        taints=[{"key": builders.GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}],
    )
    names = [s["name"] for s in sample("specialistpool.yaml")["spec"]["specialists"]]
    apply_sample(cluster, "specialistpool.yaml", warm=names[:1])
    cluster.wait_for(lambda: [p for _, p in placed(cluster).values()] == ["Running"], what="sotab's specialist")
    second = sample("specialistpool.yaml", warm=names[1:3])
    second["metadata"]["name"] = "second"
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(second))
    status = cluster.wait_for(
        lambda: (s := pool_status(cluster, "second")) and s.get("observedGeneration") == 1 and s,
        what=f"second planned\n{operator.log()}",
    )
    assert [r["name"] for r in status["specialists"] if r["replicas"]] == names[1:2]
    assert find_condition(status, ConditionType.BudgetExceeded)["message"].startswith(f"not admitted: {names[2]}")
    cluster.wait_for(
        lambda: sorted(p for _, p in placed(cluster).values()) == ["Running", "Running"],
        what=f"both pools' admitted specialists running: {placed(cluster)}",
    )
