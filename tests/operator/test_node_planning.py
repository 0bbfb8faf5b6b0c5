"""What nodes can take (operator/nodes.py) and a plan that keeps to it (budget.pool_gpus, budget.place_groups'
Limits, pool.plan): issue #31, defect 4."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from swarm.operator import budget, builders, crdgen
from swarm.operator.models import SpecialistPoolSpec
from swarm.operator.nodes import Fitness, NodeReading, fitness, millis, pod_requests, quantity, reading, tolerates
from swarm.operator.pool import Claim, plan, trainer_key, unfit_note
from swarm.testing.emulator import RTX_4090_TOTAL, gpu_node, pool_body

pytestmark = pytest.mark.timeout(30)
MIB, GIB = 1 << 20, 1 << 30
NOW = datetime(2025, 1, 1, tzinfo=UTC)
GPU_TOLERATIONS = builders.default_templates()["specialist"]["spec"]["tolerations"]
SIZE = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
CPU, MEMORY = pod_requests(builders.default_templates()["specialist"])


def node(name: str = "n", **fields: Any) -> NodeReading:
    """A Ready, schedulable GPU node with 24 GiB of GPU memory advertised, 32 CPUs and 256 GiB."""
    return NodeReading(name, {"gpu": "4090"}, **{"cpu": 32_000, "memory": 256 * GIB, "gpu_memory_mib": 24564, **fields})


def test_quantities_as_the_api_server_reads_them() -> None:
    assert [millis(q) for q in ("1", "500m", "1.5", 2, "0.0001")] == [1000, 500, 1500, 2000, 1]
    assert [quantity(q) for q in ("4Gi", "1k", "1e3", "128974848")] == [4 * GIB, 1000, 1000, 128974848]
    assert quantity("lots") is None and quantity("4GB") is None


def test_a_node_reading_keeps_what_the_planner_needs() -> None:
    body = gpu_node("gpu-1")
    body["spec"] = {
        "unschedulable": True,
        "taints": [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "soft", "effect": "PreferNoSchedule"},  # binds nothing: not kept
        ],
    }
    found = reading(body)
    assert (found.name, found.ready, found.unschedulable) == ("gpu-1", True, True)
    assert found.taints == (("nvidia.com/gpu", "present", "NoSchedule"),)
    assert (found.cpu, found.memory, found.gpu_memory_mib) == (32_000, 256 * GIB, RTX_4090_TOTAL // MIB)
    assert found.gpu_annotation == body["metadata"]["annotations"][budget.GPU_MEMORY_ANNOTATION]
    bare = reading({"metadata": {"name": "new"}})  # no status yet: not Ready, nothing allocatable
    assert (bare.ready, bare.cpu, bare.memory, bare.gpu_memory_mib) == (False, None, None, None)
    not_ready = gpu_node("gpu-2")
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "Unknown"}]
    assert not reading(not_ready).ready


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "k", "operator": "Exists"}, ("k", "v", "NoSchedule"), True),
        ({"operator": "Exists"}, ("any", "", "NoExecute"), True),
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, ("k", "v", "NoSchedule"), False),
        ({"key": "k", "value": "v"}, ("k", "v", "NoSchedule"), True),
        ({"key": "k", "operator": "Equal", "value": "w"}, ("k", "v", "NoSchedule"), False),
        ({"key": "other", "operator": "Exists"}, ("k", "", "NoSchedule"), False),
    ],
)
def test_tolerations_match_as_the_scheduler_matches_them(
    toleration: dict[str, str], taint: tuple[str, str, str], tolerated: bool
) -> None:
    assert tolerates([toleration], taint) is tolerated


def test_what_a_node_can_take() -> None:
    gpu_taint = ("nvidia.com/gpu", "present", "NoSchedule")
    assert fitness(node(taints=(gpu_taint,)), GPU_TOLERATIONS, True) == (Fitness.OPEN, "")
    assert fitness(node(unschedulable=True), GPU_TOLERATIONS, True) == (Fitness.CLOSED, "cordoned")
    assert fitness(node(taints=(("maintenance", "", "NoSchedule"),)), GPU_TOLERATIONS, True)[0] == Fitness.CLOSED
    assert fitness(node(taints=(("maintenance", "", "NoExecute"),)), GPU_TOLERATIONS, True)[0] == Fitness.GONE
    assert fitness(node(ready=False), GPU_TOLERATIONS, True) == (Fitness.GONE, "NotReady")
    assert fitness(node(gpu_memory_mib=None), GPU_TOLERATIONS, True)[0] == Fitness.GONE
    assert fitness(node(gpu_memory_mib=0), GPU_TOLERATIONS, True)[0] == Fitness.GONE
    # A CPU pod requests no GPU memory: a node without the resource takes it.
    assert fitness(node(gpu_memory_mib=None), GPU_TOLERATIONS, False) == (Fitness.OPEN, "")


def test_pool_gpus_skip_nodes_that_cannot_take_the_pods() -> None:
    nodes = [
        node("a-open"),
        node("b-cordoned", unschedulable=True),
        node("c-not-ready", ready=False),
        node("d-cpu", gpu_memory_mib=None),
        node("e-tainted", taints=(("maintenance", "", "NoSchedule"),)),
        node("f-evicting", taints=(("maintenance", "", "NoExecute"),)),
    ]
    gpus = budget.pool_gpus(nodes, {"gpu": "4090"}, (1, 10 * GIB), tolerations=GPU_TOLERATIONS, needs_gpu_memory=True)
    assert [(g.node, g.closed) for g in gpus] == [("a-open", False), ("b-cordoned", True), ("e-tainted", True)]
    assert budget.usable(gpus, GIB) == [9 * GIB, 0, 0]  # a closed GPU takes nothing new
    assert budget.usable(gpus, GIB, closed_too=True) == [9 * GIB] * 3
    assert budget.spawn_budget(budget.usable(gpus, 0), [GIB] * 30, budget.limits_of(gpus, {}, {})) == 10
    # The pool's Ready condition names them (pool.unfit_note).
    unfit = budget.unfit_nodes(nodes, {"gpu": "4090"}, tolerations=GPU_TOLERATIONS, needs_gpu_memory=True)
    assert unfit == [
        "b-cordoned (cordoned)",
        "c-not-ready (NotReady)",
        f"d-cpu (no {budget.GPU_MEMORY_RESOURCE} allocatable)",
        "e-tainted (taint maintenance:NoSchedule)",
        "f-evicting (taint maintenance:NoExecute)",
    ]
    assert unfit_note(unfit) == f"; taking no new pods: {', '.join(unfit)}"
    assert unfit_note([*unfit, "g (NotReady)"]).endswith("f-evicting (taint maintenance:NoExecute) and more")
    assert unfit_note([]) == ""


def test_an_empty_node_selector_is_invalid_in_the_model_and_the_crd() -> None:
    body = pool_body(nodeSelector={})
    with pytest.raises(ValueError, match="nodeSelector"):
        SpecialistPoolSpec.model_validate(body["spec"])
    assert any("nodeSelector" in problem for problem in crdgen.validate_resource(body))
    assert not crdgen.validate_resource(pool_body(nodeSelector={"gpu": "4090"}))


def test_pod_requests_come_from_the_template() -> None:
    assert (CPU, MEMORY) == (1000, 4 * GIB)  # the default specialist template
    limits_only = {"spec": {"containers": [{"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}, {}]}}
    assert pod_requests(limits_only) == (2000, GIB)  # a limit stands for the request it does not make
    assert pod_requests({"spec": {"containers": [{"name": "c"}]}}) == (0, 0)


def test_cpu_requests_bound_the_warm_set() -> None:
    """64 warm specialists at 1 CPU on one 32-CPU node whose GPU holds them all: 32 are admitted, the budget says
    32 (before: 64, and 35 pods Pending on Insufficient cpu)."""
    names = tuple(f"s{i}" for i in range(64))
    spec = SpecialistPoolSpec.model_validate(pool_body(names=names, warm=names)["spec"])
    gpus = [budget.Gpu("n", 0, 64 * SIZE + GIB, 0, "nvml")]
    room = {"n": (32_000, 256 * GIB)}
    rows, placement = plan(spec, gpus, [], {}, NOW, room=room, requests=(CPU, MEMORY))
    assert len(placement.admitted) == 32 and placement.room == {"n": (0, 128 * GIB)}
    assert sum(r["replicas"] for r in rows) == 32 and rows[-1]["state"] == "OverBudget"
    capacities = budget.usable(gpus, GIB)
    assert budget.spawn_budget(capacities, [SIZE] * 64, budget.limits_of(gpus, room, {}), (CPU, MEMORY)) == 32
    assert budget.spawn_budget(capacities, [SIZE] * 64) == 64  # GPU memory alone


def test_memory_requests_and_a_trainers_requests_count_too() -> None:
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("a", "b", "c"), warm=("a",))["spec"])
    gpus = [budget.Gpu("n1", 0, 24 * GIB, 0, "nvml"), budget.Gpu("n2", 0, 24 * GIB, 0, "nvml")]
    room = {"n1": (32_000, 10 * GIB), "n2": (32_000, 256 * GIB)}
    claim = Claim("j", ("b", "c"), "1", trainer_bytes=6 * GIB)
    _, placement = plan(
        spec, gpus, [claim], {}, NOW, room=room, requests=(CPU, MEMORY), trainer_requests=(4000, 16 * GIB)
    )
    # n1 has memory for two specialists and no trainer: the trainer goes to n2, so does c.
    assert placement.admitted == {"a": 0, "b": 0, "c": 1, trainer_key("j"): 1}


def _row(name: str, node: str, *, ready: bool = True) -> dict[str, Any]:
    return {"name": name, "replicas": 1, "node": node, "gpu": 0, "ready": ready, "state": "Warm"}


def test_specialists_pinned_to_a_cordoned_node_are_placed_anew() -> None:
    """The warm set ran on n1, which was cordoned (and drained): it goes to n2 rather than back to n1."""
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("a", "b"), warm=("a", "b"))["spec"])
    gpus = [budget.Gpu("n1", 0, 24 * GIB, 0, "nvml", closed=True), budget.Gpu("n2", 0, 24 * GIB, 0, "nvml")]
    previous = {"a": _row("a", "n1"), "b": _row("b", "n1", ready=False)}
    rows, placement = plan(spec, gpus, [], previous, NOW)
    assert placement.admitted == {"a": 1, "b": 1}
    assert [(r["name"], r["node"]) for r in rows] == [("a", "n2"), ("b", "n2")]
    # Only a closed GPU left: nothing is admitted there (no Pending pods pinned to it).
    rows, placement = plan(spec, gpus[:1], [], previous, NOW)
    assert not placement.admitted and {r["state"] for r in rows} == {"OverBudget"}


def test_a_running_jobs_ready_specialists_stay_on_a_cordoned_node() -> None:
    """A running job's specialist that is ready on a cordoned node stays (moving it would restart it under the
    trainer), as does its trainer; its specialist that is not ready there (drained) is placed anew, and so is the
    warm one no job holds."""
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("w", "p", "q"), warm=("w",))["spec"])
    gpus = [budget.Gpu("n1", 0, 24 * GIB, 0, "nvml", closed=True), budget.Gpu("n2", 0, 24 * GIB, 0, "nvml")]
    previous = {"w": _row("w", "n1"), "p": _row("p", "n1"), "q": _row("q", "n1", ready=False)}
    claim = Claim("j", ("p", "q"), "1", running=True, trainer_bytes=6 * GIB, trainer_gpu=("n1", 0))
    _, placement = plan(spec, gpus, [claim], previous, NOW)
    assert placement.admitted == {"p": 0, "q": 1, trainer_key("j"): 0, "w": 1}
    # The same job, not yet running: nothing of it is placed on the cordoned node.
    pending = Claim("j", ("p", "q"), "1", trainer_bytes=6 * GIB)
    _, placement = plan(spec, gpus, [pending], previous, NOW)
    assert set(placement.admitted.values()) == {1}


def test_protected_cpu_is_not_there_for_the_rest() -> None:
    limits = budget.Limits(node_of=["n"], room={"n": (2000, GIB)}, requests=dict.fromkeys("abc", (1000, 0)))
    placement = budget.place_protected([10], [10], [[("a", 1)]], [[("b", 1)], [("c", 1)]], limits=limits)
    assert placement.admitted == {"a": 0, "b": 0} and placement.rejected == ["c"]
    assert placement.room == {"n": (0, GIB)}


def test_other_pools_specialists_take_cpu_and_memory_from_the_room() -> None:
    """Before: each pool planned against the node's whole allocatable CPU, so two pools each admitted what alone
    fitted and the scheduler left the second's pods Pending on Insufficient cpu."""
    room = {"n": (8_000, 64 * GIB), "m": (8_000, 64 * GIB)}
    other = {
        "metadata": {"name": "other"},
        "status": {
            "specialists": [
                {"name": "x", "replicas": 1, "node": "n"},
                {"name": "y", "replicas": 1, "node": "n"},
                {"name": "z", "replicas": 0},  # cold: requests nothing
                {"name": "w", "replicas": 1, "node": "gone"},
            ]
        },
    }
    mine = {"metadata": {"name": "mine"}, "status": {"specialists": [{"name": "a", "replicas": 1, "node": "m"}]}}
    left = budget.room_left(room, [other, mine], "mine", (3_000, 40 * GIB))
    assert left == {"n": (2_000, 0), "m": (8_000, 64 * GIB)}
    assert budget.room_left(room, [other, mine], "other", (1_000, GIB))["m"] == (7_000, 63 * GIB)


def test_a_nodes_planning_view_ignores_the_agents_free_bytes_and_timestamp() -> None:
    def annotated(free: int, updated: str, total: int = 24 * GIB) -> NodeReading:
        doc = {"source": "nvml", "updated": updated, "gpus": [{"index": 0, "total": total, "free": free}]}
        return node(gpu_annotation=json.dumps(doc))

    base = budget.planning_view(annotated(20 * GIB, "2025-01-01T00:00:00+00:00"))
    assert budget.planning_view(annotated(3 * GIB, "2025-01-01T00:05:00+00:00")) == base
    for changed in (
        annotated(20 * GIB, "2025-01-01T00:00:00+00:00", total=48 * GIB),
        node(unschedulable=True),
        node(ready=False),
        node(cpu=16_000),
        node(taints=(("k", "v", "NoSchedule"),)),
    ):
        assert budget.planning_view(changed) != base


def test_placement_changes_are_logged_in_words() -> None:
    from swarm.operator.pool import placement_changes

    previous = {
        "a": {"state": "Warm", "replicas": 1, "node": "n", "gpu": 0},
        "b": {"state": "Active", "replicas": 1, "node": "n", "gpu": 0},
        "c": {"state": "Cold", "replicas": 0},
        "d": {"state": "Warm", "replicas": 1, "node": "n", "gpu": 1},
    }
    rows = [
        {"name": "a", "state": "Warm", "replicas": 1, "node": "m", "gpu": 0},
        {"name": "b", "state": "Cold", "replicas": 0},
        {"name": "c", "state": "OverBudget", "replicas": 0},
        {"name": "d", "state": "Warm", "replicas": 1, "node": "n", "gpu": 1},
        {"name": "e", "state": "Active", "replicas": 1, "node": "n", "gpu": 0},
    ]
    assert placement_changes(previous, rows) == [
        "a moved from n GPU 0 to m GPU 0 (Warm)",
        "b scaled to zero from n GPU 0 (Cold)",
        "c Cold -> OverBudget",
        "e placed on n GPU 0 (Active)",
    ]
