"""Many jobs in one namespace (issue #31, defect 5): pool reconciles asked for meanwhile are shared
(pool.reconcile_coalesced), a specialist Deployment event that changes nothing a pool reads is skipped
(handlers.deployment_fingerprint), and a job waiting for budget is woken when capacity frees or a node comes (no retry
timer); a node event that changes nothing a plan reads (budget.planning_view) re-plans nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from status_conditions import find_condition

from swarm.operator import handlers, pool
from swarm.operator.builders import trainer_pod_name
from swarm.operator.models import ConditionReason, ConditionType
from swarm.testing.emulator import JOBS, PODS, POOLS, EmulatedCluster, OperatorProcess, job_body, pool_body, wait_for

pytestmark = pytest.mark.timeout(30)


def _counting(monkeypatch: pytest.MonkeyPatch, seen: list[list[pool.Claim]]) -> None:
    """pool._reconcile replaced by one that records the claims it was given and takes a moment."""

    async def fake(
        api: Any, namespace: str, name: str, nodes: Any, claims: list[pool.Claim], templates: Any, now: datetime
    ) -> pool.PoolResult:
        seen.append(claims)
        await asyncio.sleep(0.05)
        return pool.PoolResult(found=True, message=f"run {len(seen)}")

    monkeypatch.setattr(pool, "_reconcile", fake)


def _claim(job: str) -> pool.Claim:
    return pool.Claim(job=job, specialists=("a",), created="2026-01-01T00:00:00Z")


def test_waiting_callers_share_one_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """While one reconcile of a pool runs, every caller that asks meanwhile shares the next one (which reads the
    claims once it holds the lock); a hundred callers cost two reconciles, not a hundred."""
    seen: list[list[pool.Claim]] = []
    _counting(monkeypatch, seen)
    live = [_claim("first")]

    async def scenario() -> list[pool.PoolResult]:
        first = asyncio.ensure_future(pool.reconcile_coalesced(None, "ns", "p", [], lambda: list(live), {}))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)  # the first reconcile holds the lock now
        live.append(_claim("second"))  # a job that appeared after it read the claims
        rest = [pool.reconcile_coalesced(None, "ns", "p", [], lambda: list(live), {}) for _ in range(100)]  # type: ignore[arg-type]
        return [await first, *await asyncio.gather(*rest)]

    results = asyncio.run(scenario())
    assert len(seen) == 2
    assert [c.job for c in seen[1]] == ["first", "second"]  # the shared one started after they asked
    assert {r.message for r in results[1:]} == {"run 2"}


def test_other_pools_and_namespaces_are_not_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[pool.Claim]] = []
    _counting(monkeypatch, seen)

    async def scenario() -> None:
        await asyncio.gather(
            *(
                pool.reconcile_coalesced(None, ns, name, [], [], {})  # type: ignore[arg-type]
                for ns, name in (("a", "p"), ("a", "q"), ("b", "p"))
            )
        )

    asyncio.run(scenario())
    assert len(seen) == 3


def test_sequential_callers_each_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[pool.Claim]] = []
    _counting(monkeypatch, seen)

    async def scenario() -> None:
        for _ in range(3):
            await pool.reconcile_coalesced(None, "ns", "p", [], [], {})  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert len(seen) == 3


def test_a_failed_shared_reconcile_fails_every_caller_and_the_next_one_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    async def failing(*_: Any) -> pool.PoolResult:
        calls.append(1)
        await asyncio.sleep(0.01)
        raise RuntimeError("api down")

    monkeypatch.setattr(pool, "_reconcile", failing)

    async def scenario() -> list[BaseException | pool.PoolResult]:
        return await asyncio.gather(
            *(pool.reconcile_coalesced(None, "ns", "p", [], [], {}) for _ in range(5)),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes) and len(calls) == 1
    asyncio.run(scenario())
    assert len(calls) == 2


def _deployment(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": "pool-a",
            "generation": 2,
            "labels": {"app": "x"},
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [{"uid": "u1"}],
        },
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 2, "readyReplicas": 1, "updatedReplicas": 1, "conditions": []},
    }
    for path, value in changes.items():
        section, field = path.split("__")
        body[section][field] = value
    return body


def test_deployment_fingerprint_ignores_what_the_plan_does_not_read() -> None:
    base = handlers.deployment_fingerprint(_deployment())
    for same in (
        {"status__observedGeneration": 3},
        {"status__updatedReplicas": 0},
        {"status__conditions": [{"type": "Available", "status": "True"}]},
        {"metadata__resourceVersion": "99"},
    ):
        assert handlers.deployment_fingerprint(_deployment(**same)) == base, same
    for changed in (
        {"status__readyReplicas": 0},
        {"spec__replicas": 0},
        {"metadata__generation": 3},
        {"metadata__labels": {"app": "y"}},
        {"metadata__ownerReferences": []},
        {"metadata__deletionTimestamp": "2026-01-01T00:00:00Z"},
    ):
        assert handlers.deployment_fingerprint(_deployment(**changed)) != base, changed


# ---------------------------------------------------------------------------------------------- the operator process
NS = "swarm"
GIB = 1024**3


def _phase(cluster: EmulatedCluster, name: str) -> str:
    return str(((cluster.get(JOBS, NS, name) or {}).get("status") or {}).get("phase", ""))


def _waiting_for_budget(cluster: EmulatedCluster, name: str) -> bool:
    st = (cluster.get(JOBS, NS, name) or {}).get("status") or {}
    return find_condition(st, ConditionType.SpecialistsGranted).get("reason") == ConditionReason.BudgetExceeded


@pytest.mark.timeout(60)
@pytest.mark.parametrize("frees", ["deleted", "finished", "node added"])
def test_a_job_waiting_for_budget_is_woken_when_capacity_frees(
    cluster: EmulatedCluster, add_node: Any, frees: str
) -> None:
    """No retry timer and no resync (600 s): `second` waits for GPU memory budget while `first`'s trainer holds
    it; `first` deleted, its trainer pod finished, or a second GPU node added wakes `second`, which gets its trainer
    pod."""
    add_node()
    cluster.create(POOLS, pool_body())
    cluster.ready_deployments()
    cluster.create(JOBS, job_body("first", specialists=("b",), gpuMemoryBytes=14 * GIB))
    with OperatorProcess(cluster, NS, retry=600, resync=600) as op:
        first = wait_for(
            lambda: cluster.get(PODS, NS, trainer_pod_name("first")), what=f"first's trainer pod\n{op.log()}"
        )
        cluster.create(JOBS, job_body("second", specialists=("b",), gpuMemoryBytes=14 * GIB))
        wait_for(lambda: _waiting_for_budget(cluster, "second"), what=f"second waiting for budget\n{op.log()}")
        assert cluster.get(PODS, NS, trainer_pod_name("second")) is None
        if frees == "deleted":
            cluster.delete(JOBS, NS, "first")
        elif frees == "node added":
            add_node("gpu-2")
        else:
            done = {"phase": "Succeeded", "containerStatuses": [{"name": "trainer", "state": {"terminated": {}}}]}
            cluster.patch(PODS, NS, first["metadata"]["name"], {"status": done}, status=True)
            wait_for(lambda: _phase(cluster, "first") == "Succeeded", what=f"first Succeeded\n{op.log()}")
        wait_for(
            lambda: cluster.get(PODS, NS, trainer_pod_name("second")),
            timeout=15,
            what=f"second's trainer pod once {frees}\n{op.log()}",
        )
        assert "ERROR" not in op.log()
