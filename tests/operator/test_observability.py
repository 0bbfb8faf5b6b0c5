"""Metrics (operator/observability.py) and the probe endpoints."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest
from aiohttp import test_utils
from prometheus_client import REGISTRY

from swarm.operator import observability

pytestmark = pytest.mark.timeout(30)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.asyncio
async def test_reconciling_counts_results_and_times_every_reconcile() -> None:
    kind = "TestKind"
    before = {r: sample("swarm_operator_reconciles_total", kind=kind, result=r) for r in ("success", "retry", "error")}

    @observability.reconciling(kind)
    async def handler(outcome: str) -> str:
        if outcome == "retry":
            raise kopf.TemporaryError("pool not ready", delay=1)
        if outcome == "error":
            raise KeyError("boom")
        return outcome

    assert await handler("ok") == "ok"
    async with observability.reconciling(kind):
        await asyncio.sleep(0)
    with pytest.raises(kopf.TemporaryError):
        await handler("retry")
    with pytest.raises(KeyError):
        await handler("error")
    after = {r: sample("swarm_operator_reconciles_total", kind=kind, result=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"success": 2, "retry": 1, "error": 1}
    assert sample("swarm_operator_reconcile_errors_total", kind=kind, error="KeyError") == 1
    assert sample("swarm_operator_reconcile_errors_total", kind=kind, error="TemporaryError") == 0
    assert sample("swarm_operator_reconcile_duration_seconds_count", kind=kind) == 4


def status(gpus: dict[tuple[str, int], int], states: list[str]) -> dict[str, Any]:
    return {
        "capacityBytes": 24 << 30,
        "residentBytes": sum(gpus.values()),
        "gpuUsage": [{"node": n, "index": i, "bytes": b} for (n, i), b in gpus.items()],
        "specialists": [{"name": f"s{k}", "state": s} for k, s in enumerate(states)],
    }


def test_pool_gauges_follow_the_status_and_go_with_the_pool() -> None:
    pool = {"namespace": "ns", "pool": "gauged"}
    observability.observe_pool("ns", "gauged", status({("n1", 0): 100, ("n1", 1): 50}, ["Warm", "Active", "Cold"]))
    assert sample("swarm_pool_capacity_bytes", **pool) == 24 << 30
    assert sample("swarm_pool_resident_bytes", **pool) == 150
    assert sample("swarm_pool_gpu_used_bytes", **pool, node="n1", gpu="1") == 50
    states = {s: sample("swarm_pool_specialists", **pool, state=s) for s in observability.STATES}
    assert states == {"warm": 1, "active": 1, "cold": 1, "overbudget": 0}

    observability.observe_pool("ns", "gauged", status({("n1", 0): 100}, ["Warm", "OverBudget", "Cold"]))
    assert REGISTRY.get_sample_value("swarm_pool_gpu_used_bytes", {**pool, "node": "n1", "gpu": "1"}) is None
    assert sample("swarm_pool_specialists", **pool, state="overbudget") == 1
    assert sample("swarm_pool_specialists", **pool, state="active") == 0

    observability.observe_pool("ns", "gauged", None)
    for name in ("swarm_pool_capacity_bytes", "swarm_pool_resident_bytes"):
        assert REGISTRY.get_sample_value(name, pool) is None
    assert REGISTRY.get_sample_value("swarm_pool_gpu_used_bytes", {**pool, "node": "n1", "gpu": "0"}) is None
    assert REGISTRY.get_sample_value("swarm_pool_specialists", {**pool, "state": "warm"}) is None


@pytest.mark.asyncio
async def test_readiness_needs_the_lease_and_a_started_kopf_liveness_does_not() -> None:
    health = observability.Health()
    async with test_utils.TestClient(test_utils.TestServer(observability.app(health))) as client:

        async def get(path: str) -> int:
            async with client.get(path) as resp:
                await resp.read()
                return resp.status

        assert (await get("/healthz"), await get("/readyz")) == (200, 503)  # a standby
        health.set_leader(True)
        assert await get("/readyz") == 503 and sample("swarm_operator_leader") == 1  # kopf still starting
        health.started.set()
        assert await get("/readyz") == 200
        async with client.get("/metrics") as resp:
            text = await resp.text()
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        assert "swarm_operator_leader 1.0" in text
        health.set_leader(False)
        assert (await get("/healthz"), await get("/readyz")) == (200, 503)
        assert sample("swarm_operator_leader") == 0


def test_quiet_waiting_logs_a_waiting_job_at_info_and_nothing_else() -> None:
    quiet = observability.QuietWaiting("job-create")

    def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    waiting = record("Handler 'job-create' failed temporarily: waiting for GPU memory budget: people")
    assert quiet.filter(waiting) and (waiting.levelno, waiting.levelname) == (logging.INFO, "INFO")
    for message in (
        "Handler 'pool-create' failed temporarily: boom",  # another handler's
        "Handler 'job-create' failed with an exception. Will retry.",  # a real error
    ):
        other = record(message)
        assert quiet.filter(other) and other.levelno == logging.ERROR
