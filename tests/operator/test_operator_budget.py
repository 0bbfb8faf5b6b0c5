"""Byte math, GPU readings and placement (operator/budget.py) plus the pool planning step."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from swarm.operator import budget
from swarm.operator.models import SpecialistPoolSpec
from swarm.operator.nodes import NodeReading
from swarm.operator.pool import DEMAND_JOB, Claim, plan, trainer_key
from swarm.testing.emulator import RTX_4090_TOTAL, pool_body

MIB, GIB = 1 << 20, 1 << 30
pytestmark = pytest.mark.timeout(30)


def test_resident_bytes_per_dtype() -> None:
    assert budget.weight_bytes(120_000_000, "float32") == 480_000_000
    assert budget.weight_bytes(120_000_000, "bfloat16") == 240_000_000
    # 240 MB of bf16 weights: activations floor at 64 MiB, plus the per-process runtime overhead.
    assert budget.resident_bytes(dtype="bfloat16", params=120_000_000) == 240_000_000 + 64 * MIB + 384 * MIB
    # 1.2 GB of fp32 weights: activations are a quarter of the weights.
    assert budget.resident_bytes(dtype="float32", params=300_000_000) == 1_200_000_000 + 300_000_000 + 384 * MIB
    assert budget.resident_bytes(dtype="float16", params=10, activation=0) == 20 + 384 * MIB
    assert budget.resident_bytes(dtype="float32", params=10, resident=123) == 123
    with pytest.raises(ValueError, match="need params"):
        budget.resident_bytes(dtype="float16")


def test_parse_annotation_nvml_stale_and_garbage() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    doc = {"source": "nvml", "updated": now.isoformat(), "gpus": [{"index": 0, "total": RTX_4090_TOTAL, "free": 1000}]}
    assert budget.parse_gpu_annotation("n", json.dumps(doc), now=now) == [
        budget.Gpu("n", 0, RTX_4090_TOTAL, 1000, "nvml")
    ]
    # A stale reading is kept (an agent that went quiet must not evict what runs there), marked stale.
    assert budget.parse_gpu_annotation("n", json.dumps(doc), now=now + timedelta(hours=1)) == [
        budget.Gpu("n", 0, RTX_4090_TOTAL, 1000, "nvml", stale=True)
    ]
    assert budget.parse_gpu_annotation("n", "{not json", now=now) is None
    assert budget.parse_gpu_annotation("n", json.dumps({"source": "unavailable", "gpus": []})) is None
    assert budget.parse_gpu_annotation("n", None) is None


MALFORMED_READINGS = [
    "[]",
    "null",
    "42",
    '"x"',
    "true",
    '{"gpus": 5}',
    '{"gpus": {"index": 0}}',
    '{"gpus": [{"index": "a"}]}',
    '{"gpus": [{"index": "a", "total": 1}]}',
    '{"gpus": [5]}',
    '{"gpus": [null]}',
    '{"gpus": [{"index": 0, "total": -1}]}',
    '{"gpus": [{"index": 0, "total": 1e400}]}',
    '{"gpus": [{"index": 0, "total": 100, "free": [1]}]}',
    '{"gpus": [{"index": 0, "total": 100}], "updated": 42}',
    '{"gpus": [{"index": 0, "total": 100}], "updated": "yesterday"}',
]


@pytest.mark.parametrize("raw", MALFORMED_READINGS)
def test_malformed_annotation_is_no_reading_and_fallback_applies(raw: str) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert budget.parse_gpu_annotation("n", raw, now=now) is None
    gpus = budget.pool_gpus([NodeReading("n", {"gpu": "4090"}, raw)], {"gpu": "4090"}, (1, 50), now=now)
    assert [(g.node, g.total, g.source) for g in gpus] == [("n", 50, "fallback")]


def test_pool_gpus_selects_nodes_and_falls_back() -> None:
    reading = json.dumps({"source": "nvml", "gpus": [{"index": 0, "total": 100}, {"index": 1, "total": 200}]})
    selector = {"gpu": "4090"}
    nodes = [
        NodeReading("b", {"gpu": "4090"}, reading),
        NodeReading("a", {"gpu": "4090"}, None),
        NodeReading("c", {"gpu": "a100"}, reading),
    ]
    assert [(g.node, g.total, g.source) for g in budget.pool_gpus(nodes, selector, None)] == [
        ("b", 100, "nvml"),
        ("b", 200, "nvml"),
    ]
    assert [(g.node, g.total, g.source) for g in budget.pool_gpus(nodes, selector, (2, 50))] == [
        ("a", 50, "fallback"),
        ("a", 50, "fallback"),
        ("b", 100, "nvml"),
        ("b", 200, "nvml"),
    ]


def test_placement_is_first_fit_in_priority_order() -> None:
    placed = budget.place([10, 6], [("big", 7), ("mid", 5), ("small", 4), ("huge", 11), ("tiny", 1)])
    assert placed.admitted == {"big": 0, "mid": 1, "tiny": 0}
    assert placed.rejected == ["small", "huge"]
    assert placed.used == [8, 5]
    assert budget.usable([budget.Gpu("n", 0, 5 * GIB, 0, "nvml")], 6 * GIB) == [0]


def test_spawn_budget_on_one_rtx_4090() -> None:
    per_specialist = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
    usable = budget.usable([budget.Gpu("n", 0, RTX_4090_TOTAL, 0, "nvml")], GIB)
    assert budget.spawn_budget(usable, [per_specialist] * 100) == (RTX_4090_TOTAL - GIB) // per_specialist == 34
    assert budget.spawn_budget([0], [1]) == 0


def test_plan_orders_warm_then_requested_then_idle() -> None:
    spec = SpecialistPoolSpec.model_validate(
        pool_body(names=("a", "b", "c", "d"), warm=("a",), idleTimeoutSeconds=60)["spec"]
    )
    size = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
    gpus = [budget.Gpu("n", 0, GIB + 2 * size, 0, "nvml")]  # room for exactly two specialists
    now = datetime(2025, 1, 1, tzinfo=UTC)
    rows, placement = plan(spec, gpus, [Claim("j2", ("c",), "2"), Claim("j1", ("b",), "1")], {}, now)
    assert set(placement.admitted) == {"a", "b"}  # j1 is older: its b wins over j2's c
    assert [(r["name"], r["state"], r["replicas"]) for r in rows] == [
        ("a", "Warm", 1),
        ("b", "Active", 1),
        ("c", "OverBudget", 0),
        ("d", "Cold", 0),
    ]
    assert rows[1]["requestedBy"] == ["j1"] and rows[1]["lastRequested"] == "2025-01-01T00:00:00Z"
    previous = {r["name"]: r for r in rows}
    later = now + timedelta(seconds=30)
    rows, _ = plan(spec, gpus, [], previous, later)  # no claims: b stays up within its idle timeout
    assert [r["state"] for r in rows] == ["Warm", "Active", "Cold", "Cold"]
    rows, _ = plan(spec, gpus, [], previous, now + timedelta(seconds=61))
    assert [r["state"] for r in rows] == ["Warm", "Cold", "Cold", "Cold"]


def test_pools_sharing_a_gpu_budget_around_each_other() -> None:
    gpus = [budget.Gpu("n1", 0, 10 * GIB, 0, "nvml"), budget.Gpu("n1", 1, 10 * GIB, 0, "nvml")]
    placement = budget.place(budget.usable(gpus, GIB), [("a", 6 * GIB), ("b", 2 * GIB)])
    usage = budget.gpu_usage(gpus, placement)
    assert usage == [{"node": "n1", "index": 0, "bytes": 8 * GIB}]  # the unused GPU is left out
    pools = [
        {"metadata": {"name": "first"}, "status": {"gpuUsage": usage}},
        {"metadata": {"name": "second"}, "status": {"gpuUsage": [{"node": "n1", "index": 1, "bytes": GIB}]}},
        {"metadata": {"name": "third"}},  # not reconciled yet: holds nothing
    ]
    assert budget.taken_by_others(pools, "second") == {("n1", 0): 8 * GIB}
    taken = budget.taken_by_others(pools, "third")
    assert taken == {("n1", 0): 8 * GIB, ("n1", 1): GIB}
    assert budget.usable(gpus, GIB, taken) == [GIB, 8 * GIB]


def test_a_malformed_usage_entry_of_another_pool_is_skipped() -> None:
    pools = [
        {
            "metadata": {"name": "other"},
            "status": {
                "gpuUsage": [
                    {"node": "n1", "index": 0},  # no bytes
                    {"node": "n1", "index": "x", "bytes": 5},
                    {"node": "n1", "index": 1, "bytes": GIB},
                ]
            },
        }
    ]
    assert budget.taken_by_others(pools, "mine") == {("n1", 1): GIB}


def _states(rows: list[dict]) -> dict[str, tuple[str, int]]:
    return {r["name"]: (r["state"], r["replicas"]) for r in rows}


def test_a_job_claim_is_admitted_whole_or_not_at_all() -> None:
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("a", "b", "c", "d"), warm=("a",))["spec"])
    size = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
    gpus = [budget.Gpu("n", 0, GIB + 3 * size, 0, "nvml")]  # the warm a and two more
    now = datetime(2025, 1, 1, tzinfo=UTC)

    # One unknown name: the claim holds nothing up (the job stays Pending with UnknownSpecialist).
    rows, placement = plan(spec, gpus, [Claim("j1", ("b", "nope"), "1")], {}, now)
    assert set(placement.admitted) == {"a"} and _states(rows)["b"] == ("Cold", 0)
    assert rows[1]["requestedBy"] == [] and "lastRequested" not in rows[1]

    # j1 needs three and two fit: none of its specialists is admitted; j2, later, still fits; a stays warm.
    claims = [Claim("j1", ("b", "c", "d"), "1"), Claim("j2", ("d",), "2")]
    rows, placement = plan(spec, gpus, claims, {}, now)
    assert set(placement.admitted) == {"a", "d"}
    assert _states(rows) == {"a": ("Warm", 1), "b": ("OverBudget", 0), "c": ("OverBudget", 0), "d": ("Active", 1)}
    assert rows[1]["requestedBy"] == ["j1"] and "lastRequested" not in rows[1]  # a denied claim refreshes nothing
    assert rows[3]["requestedBy"] == ["j1", "j2"] and rows[3]["lastRequested"] == "2025-01-01T00:00:00Z"

    # An earlier claim keeps its specialists; a later one that then does not fit gets none (its b is not taken).
    claims = [Claim("j0", ("c", "d"), "0"), Claim("j1", ("b", "c"), "1")]
    rows, placement = plan(spec, gpus, claims, {}, now)
    assert set(placement.admitted) == {"a", "c", "d"} and _states(rows)["b"] == ("OverBudget", 0)
    # A name an earlier claim holds costs the later claim nothing: j1 (c, d) fits alongside j0 (c).
    rows, placement = plan(spec, gpus, [Claim("j0", ("c",), "0"), Claim("j1", ("c", "d"), "1")], {}, now)
    assert set(placement.admitted) == {"a", "c", "d"}

    # Demand claims stay one specialist each, after every job's claim.
    demand = [
        Claim(DEMAND_JOB, ("b",), "2025-01-01T00:00:00Z", demand=True),
        Claim(DEMAND_JOB, ("c",), "2025-01-01T00:00:00Z", demand=True),
    ]
    rows, placement = plan(spec, gpus, [Claim("j1", ("b", "c", "d"), "1"), *demand], {}, now)
    assert set(placement.admitted) == {"a", "b", "c"} and _states(rows)["d"] == ("OverBudget", 0)


def test_a_denied_claim_does_not_keep_an_idle_specialist_up_forever() -> None:
    spec = SpecialistPoolSpec.model_validate(
        pool_body(names=("a", "b", "c", "d"), warm=("a",), idleTimeoutSeconds=60)["spec"]
    )
    size = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
    gpus = [budget.Gpu("n", 0, GIB + 2 * size, 0, "nvml")]  # a and one more
    now = datetime(2025, 1, 1, tzinfo=UTC)
    rows, _ = plan(spec, gpus, [Claim("done", ("b",), "0")], {}, now)  # b ran for a job that has finished
    previous = {r["name"]: r for r in rows}
    pending = [Claim("j1", ("b", "c"), "1")]  # does not fit
    rows, placement = plan(spec, gpus, pending, previous, now + timedelta(seconds=30))
    assert "b" in placement.admitted and rows[1]["lastRequested"] == "2025-01-01T00:00:00Z"  # idle-kept, not renewed
    rows, placement = plan(spec, gpus, pending, {r["name"]: r for r in rows}, now + timedelta(seconds=61))
    assert set(placement.admitted) == {"a"} and _states(rows)["b"] == ("OverBudget", 0)


def test_place_groups_whole_or_not_at_all() -> None:
    placed = budget.place_groups([10, 6], [[("a", 7)], [("b", 5), ("c", 5)], [("d", 3)], [("a", 7), ("e", 2)]])
    assert placed.admitted == {"a": 0, "d": 0, "e": 1} and placed.rejected == ["b", "c"] and placed.used == [10, 2]


def test_place_protected_ignores_the_reserve_for_protected_groups_only() -> None:
    # full 10, usable 4 (a reserve of 6): the protected group (8) fits the full GPU; b (3) would fit the reserve's
    # room alone, but not what the protected group leaves of it; an already placed name costs nothing.
    placed = budget.place_protected([10], [4], [[("p", 5), ("t", 3)]], [[("b", 3)], [("p", 5)], [("c", 2)]])
    assert placed.admitted == {"p": 0, "t": 0} and placed.rejected == ["b", "c"] and placed.used == [8]
    placed = budget.place_protected([10], [10], [[("p", 5)]], [[("b", 3)], [("c", 3)]])
    assert placed.admitted == {"p": 0, "b": 0} and placed.rejected == ["c"] and placed.used == [8]


def test_a_jobs_trainer_is_placed_with_its_specialists() -> None:
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("a", "b", "c"), warm=("a",))["spec"])
    size = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
    gpus = [budget.Gpu("n", 0, GIB + 2 * size + 3 * GIB, 0, "nvml"), budget.Gpu("n", 1, GIB + 4 * GIB, 0, "nvml")]
    now = datetime(2025, 1, 1, tzinfo=UTC)
    # The trainer (4 GiB) fits on GPU 1 beside nothing else: the job is admitted, its trainer counted there.
    rows, placement = plan(spec, gpus, [Claim("j1", ("b",), "1", trainer_bytes=4 * GIB)], {}, now)
    assert placement.admitted == {"a": 0, "b": 0, trainer_key("j1"): 1}
    assert placement.used == [2 * size, 4 * GIB] and _states(rows)["b"] == ("Active", 1)
    # A 5 GiB trainer fits nowhere: the job's specialist is not admitted either (it would hold a GPU for nothing).
    rows, placement = plan(spec, gpus, [Claim("j1", ("b",), "1", trainer_bytes=5 * GIB)], {}, now)
    assert set(placement.admitted) == {"a"} and trainer_key("j1") in placement.rejected
    assert _states(rows)["b"] == ("OverBudget", 0) and rows[1]["requestedBy"] == ["j1"]
    assert "lastRequested" not in rows[1]
    # A running job's trainer stays on the GPU it is pinned to, and with a reserve of the whole GPU the running job
    # keeps its specialist and trainer while the warm a goes over budget.
    running = Claim("j1", ("b",), "1", running=True, trainer_bytes=GIB, trainer_gpu=("n", 1))
    _, placement = plan(spec, gpus, [running], {}, now)
    assert placement.admitted[trainer_key("j1")] == 1
    whole = spec.model_copy(update={"memory_reserve_per_gpu": 100 * GIB})
    rows, placement = plan(whole, gpus, [running], {}, now)
    assert set(placement.admitted) == {"b", trainer_key("j1")} and _states(rows)["a"] == ("OverBudget", 0)


def test_a_running_claim_naming_a_removed_specialist_keeps_the_rest() -> None:
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("a", "b", "c"), warm=("a",))["spec"])
    gpus = [budget.Gpu("n", 0, 20 * GIB, 0, "nvml")]
    now = datetime(2025, 1, 1, tzinfo=UTC)
    running = Claim("j1", ("b", "gone"), "1", running=True, trainer_bytes=GIB)
    _, placement = plan(spec, gpus, [running], {}, now)
    assert set(placement.admitted) == {"a", "b", trainer_key("j1")}
    _, placement = plan(spec, gpus, [replace(running, running=False)], {}, now)  # a pending one claims nothing
    assert set(placement.admitted) == {"a"}
