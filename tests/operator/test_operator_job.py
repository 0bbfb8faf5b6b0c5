"""job.py and pool.py against an in-memory API (fake_api.FakeApi): status writes, trainer pod ownership."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from fake_api import FakeApi
from status_conditions import find_condition

from swarm.operator import builders, job, pool, status_write
from swarm.operator.kube import JOBS, PODS, POOLS, Api, ApiError
from swarm.operator.models import ConditionReason, ConditionType, JobMetrics
from swarm.operator.nodes import NodeReading, reading
from swarm.operator.status import condition
from swarm.testing.emulator import EmulatedCluster, gpu_node, job_body, pool_body

NS = "swarm"
pytestmark = pytest.mark.timeout(30)


def _nodes() -> list[NodeReading]:
    return [reading(gpu_node("gpu-1"))]


def _trainer_pod(api: FakeApi, job_obj: dict[str, Any], message: str | None, phase: str) -> dict[str, Any]:
    """The job's trainer pod in `phase`; with a `message`, its container has terminated with that termination
    message (where the trainer's metrics travel)."""
    pod_status: dict[str, Any] = {"phase": phase}
    if message is not None:
        pod_status["containerStatuses"] = [
            {"name": "trainer", "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": message}}}
        ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": builders.trainer_pod_name(job_obj["metadata"]["name"]),
            "namespace": NS,
            "labels": builders.trainer_labels(job_obj["metadata"]["name"], job_obj["spec"]["poolRef"]),
            "ownerReferences": [builders.owner_reference(job_obj)],
        },
        "spec": {},
        "status": pod_status,
    }
    return api.put(PODS, pod)


def _specialists_ready(api: FakeApi, claims: list[pool.Claim]) -> None:
    """Reconcile the pool for `claims`, then report every specialist Deployment's replicas ready (what the
    Deployment controller would): the trainer pod is created only once its specialists are."""
    asyncio.run(pool.reconcile(api, NS, "pool", _nodes(), claims, builders.default_templates()))  # type: ignore[arg-type]
    for (plural, _, _), obj in api.objects.items():
        if plural == "deployments":
            obj["status"] = {"replicas": obj["spec"]["replicas"], "readyReplicas": obj["spec"]["replicas"]}


def test_non_finite_metrics_are_dropped_and_the_rest_written() -> None:
    api = FakeApi()
    job_obj = api.put(JOBS, job_body())
    doc = '{"microF1": 0.8, "throughput": 1e400, "macroF1": NaN, "criticalSteps": 3}'
    pod = _trainer_pod(api, job_obj, doc, "Succeeded")
    outcome = asyncio.run(job.sync_from_pod(api, pod))  # type: ignore[arg-type]
    assert outcome.phase == "Succeeded"
    st = api.peek(JOBS, NS, "job")["status"]
    assert st["phase"] == "Succeeded" and st["metrics"] == {"microF1": 0.8, "criticalSteps": 3}
    metrics_valid = find_condition(st, ConditionType.MetricsValid)
    assert metrics_valid["status"] == "False" and metrics_valid["reason"] == ConditionReason.Ignored
    assert "non-finite" in metrics_valid["message"] and "throughput" in metrics_valid["message"]
    assert "macroF1" in metrics_valid["message"]
    json.dumps(st, allow_nan=False)
    with pytest.raises(ValueError, match="finite"):
        JobMetrics(throughput=float("inf"))


def _types(obj: dict[str, Any] | None) -> set[str]:
    return {c["type"] for c in ((obj or {}).get("status") or {}).get("conditions", [])}


def test_job_status_writes_merge_with_a_concurrent_writer() -> None:
    api = FakeApi()
    stale = api.put(JOBS, job_body())  # what job.reconcile read before the trainer pod's event came in
    metrics = condition(ConditionType.MetricsValid, True, ConditionReason.Parsed)
    asyncio.run(job.write_status(api, api.peek(JOBS, NS, "job"), {"phase": "Running"}, [metrics]))  # type: ignore[arg-type]
    found = condition(ConditionType.PoolReady, True, ConditionReason.PoolFound)
    asyncio.run(job.write_status(api, stale, {"pods": ["job-primary"]}, [found]))  # type: ignore[arg-type]
    st = api.peek(JOBS, NS, "job")["status"]
    assert _types(api.peek(JOBS, NS, "job")) == {"MetricsValid", "PoolReady"}  # neither write lost the other's
    assert st["phase"] == "Running" and st["pods"] == ["job-primary"]
    writes = [w for w in api.writes if w[0] == "patch-status"]
    assert len(writes) == 3  # the stale write was refused (409) once, then rebuilt from a fresh read
    assert all(w[2]["metadata"]["resourceVersion"] and w[3] == {"retry_conflict": False} for w in writes)


def test_pool_status_writes_merge_with_a_concurrent_writer() -> None:
    api = FakeApi()
    stale = api.put(POOLS, pool_body())
    demand = condition(ConditionType.DemandValid, True, ConditionReason.Parsed)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    asyncio.run(pool._patch_status(api, api.peek(POOLS, NS, "pool"), {"gpus": 1}, [demand], now))  # type: ignore[arg-type]
    ready = condition(ConditionType.Ready, True, ConditionReason.Reconciled)
    asyncio.run(pool._patch_status(api, stale, {"gpus": 2}, [ready], now))  # type: ignore[arg-type]
    assert _types(api.peek(POOLS, NS, "pool")) == {"DemandValid", "Ready"}
    assert api.peek(POOLS, NS, "pool")["status"]["gpus"] == 2


def test_status_conflicts_are_retried_a_bounded_number_of_times() -> None:
    api = FakeApi()
    api.put(JOBS, job_body())

    async def another_writer(verb: str, name: str) -> None:  # wins every race
        if verb == "patch-status":
            api.objects[("swarmjobs", NS, name)]["metadata"]["resourceVersion"] += "x"

    api.before_write = another_writer
    with pytest.raises(ApiError) as refused:
        asyncio.run(job.write_status(api, api.peek(JOBS, NS, "job"), {"phase": "Running"}, []))  # type: ignore[arg-type]
    assert refused.value.status == 409
    assert len([w for w in api.writes if w[0] == "patch-status"]) == status_write.CONFLICT_RETRIES + 1


def test_api_can_leave_conflicts_to_the_caller(cluster: EmulatedCluster) -> None:
    """kube.Api retries a 409 with the same body by default; `retry_conflict=False` hands it to the caller."""
    cluster.create(POOLS, pool_body())
    is_status_patch = lambda r: r.method == "PATCH" and r.subresource == "status"  # noqa: E731

    async def patch_twice() -> None:
        async with Api(kopf.ConnectionInfo(server=cluster.url), backoff=0.001) as api:
            cluster.conflict(is_status_patch, times=1)
            with pytest.raises(ApiError) as refused:
                await api.patch(POOLS, NS, "pool", {"status": {"gpus": 1}}, status=True, retry_conflict=False)
            assert refused.value.status == 409
            cluster.conflict(is_status_patch, times=1)
            await api.patch(POOLS, NS, "pool", {"status": {"gpus": 2}}, status=True)  # retried by itself

    asyncio.run(patch_twice())
    assert cluster.get(POOLS, NS, "pool")["status"]["gpus"] == 2
    assert len(cluster.requests(is_status_patch)) == 3  # 409 raised; 409 then retried


def test_a_re_created_job_never_adopts_the_old_pod() -> None:
    """A job deleted without cascading leaves its pod; a new job of the same name deletes it instead of adopting
    it, and the old pod's events never reach the new job's status."""
    api = FakeApi()
    api.put(POOLS, pool_body())
    old_job = {**job_body(), "metadata": {**job_body()["metadata"], "uid": "old-uid"}}
    old_pod = _trainer_pod(api, old_job, '{"microF1": 0.9}', "Succeeded")
    claims = [job.claim_of(api.put(JOBS, job_body()))]  # the new job: another uid
    assert asyncio.run(job.sync_from_pod(api, old_pod)).phase == "Pending"  # type: ignore[arg-type]
    assert api.peek(JOBS, NS, "job").get("status") is None  # nothing written
    _specialists_ready(api, claims)

    outcome = asyncio.run(job.reconcile(api, NS, "job", _nodes(), claims, builders.default_templates()))  # type: ignore[arg-type]
    assert outcome.phase == "Pending" and outcome.retry and "belongs to another object" in outcome.retry
    assert api.peek(PODS, NS, "job-primary") is None  # deleted, not adopted
    st = api.peek(JOBS, NS, "job")["status"]
    assert st["phase"] == "Pending" and "metrics" not in st and st["pods"] == []
    assert find_condition(st, ConditionType.TrainerPod)["reason"] == ConditionReason.ForeignPod

    outcome = asyncio.run(job.reconcile(api, NS, "job", _nodes(), claims, builders.default_templates()))  # type: ignore[arg-type]
    pod = api.peek(PODS, NS, "job-primary")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == api.peek(JOBS, NS, "job")["metadata"]["uid"]
    st = api.peek(JOBS, NS, "job")["status"]
    assert outcome.phase == "Pending" and st["pods"] == ["job-primary"] and "metrics" not in st
    assert find_condition(st, ConditionType.TrainerPod)["status"] == "True"


def test_a_pool_change_before_the_index_sees_a_started_job_keeps_its_specialists() -> None:
    """The job's reconcile writes its trainer pod into status; a pool reconcile that runs before the watch has
    updated the SwarmJob index (its claim still Pending) must plan the claim as written: running, placed first.
    Once the index shows the same claim the remembered one is dropped, and a job the index no longer lists claims
    nothing."""
    api = FakeApi()
    api.put(POOLS, pool_body())
    stale = [job.claim_of(api.put(JOBS, job_body()))]  # what the index holds until the watch catches up
    _specialists_ready(api, stale)
    asyncio.run(job.reconcile(api, NS, "job", _nodes(), stale, builders.default_templates()))  # type: ignore[arg-type]
    assert api.peek(JOBS, NS, "job")["status"]["pods"] == ["job-primary"]

    seen = job.claims_seen(NS, "pool", stale)
    assert [c.running for c in seen] == [True] and seen[0].specialists == ("b", "a")
    # A reserve of the whole GPU: only a running claim (placed without the reserve) keeps its specialists.
    pool_obj = api.peek(POOLS, NS, "pool")
    pool_obj["spec"]["memoryReservePerGpu"] = 24 * 1024**3
    result = asyncio.run(
        pool.reconcile(
            api, NS, "pool", _nodes(), lambda: job.claims_seen(NS, "pool", stale), builders.default_templates()
        )
    )  # type: ignore[arg-type]
    assert {"a", "b"} <= set(result.admitted)
    rows = {r["name"]: r["replicas"] for r in api.peek(POOLS, NS, "pool")["status"]["specialists"]}
    assert rows == {"a": 1, "b": 1, "c": 0}

    caught_up = [job.claim_of(api.peek(JOBS, NS, "job"))]
    assert job.claims_seen(NS, "pool", caught_up) == caught_up
    assert job.claims_seen(NS, "pool", stale) == stale  # dropped once seen: the index is the truth again
    asyncio.run(job.reconcile(api, NS, "job", _nodes(), caught_up, builders.default_templates()))  # type: ignore[arg-type]
    assert job.claims_seen(NS, "pool", []) == []
    assert job.claims_seen(NS, "pool", stale) == stale  # a job the index stopped listing left nothing behind
