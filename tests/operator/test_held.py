"""What a running job holds, checked against its pool (operator/held.py), and the job's claim (job.claim_of)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from status_conditions import find_condition

from swarm.operator import held, job, pool
from swarm.operator.models import GIB, ConditionReason, ConditionType
from swarm.testing.emulator import job_body, pool_body

pytestmark = pytest.mark.timeout(30)


def _pool(rows: dict[str, tuple[int, bool]], names: tuple[str, ...] = ("a", "b", "c")) -> dict[str, Any]:
    body = pool_body(names=names, warm=())
    specialists = [{"name": n, "replicas": r, "ready": ok} for n, (r, ok) in rows.items()]
    return {**body, "status": {"specialists": specialists}}


def _summary(conditions: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def test_all_held_and_ready() -> None:
    conditions = held.conditions(["b", "a"], "pool", _pool({"a": (1, True), "b": (1, True), "c": (0, False)}))
    assert _summary(conditions) == {
        "PoolReady": ("True", "PoolFound"),
        "SpecialistsGranted": ("True", "Granted"),
        "SpecialistsReady": ("True", "AllReady"),
    }
    assert find_condition({"conditions": conditions}, ConditionType.SpecialistsGranted)["message"] == "a, b"


def test_removed_stopped_and_unready_specialists_are_named() -> None:
    pool = _pool({"a": (0, False), "b": (1, False)}, names=("a", "b"))
    conditions = held.conditions(["a", "b", "gone"], "pool", pool)
    assert _summary(conditions)["SpecialistsGranted"] == ("False", ConditionReason.SpecialistLost)
    granted = find_condition({"conditions": conditions}, ConditionType.SpecialistsGranted)["message"]
    assert granted == "removed from SpecialistPool 'pool': gone; scaled to zero: a"
    ready = find_condition({"conditions": conditions}, ConditionType.SpecialistsReady)
    assert (ready["status"], ready["reason"]) == ("False", ConditionReason.NotReady)
    assert ready["message"].startswith("not ready: gone, a, b")
    # b only stopped being ready: still granted.
    conditions = held.conditions(["b"], "pool", pool)
    assert _summary(conditions)["SpecialistsGranted"] == ("True", "Granted")
    assert _summary(conditions)["SpecialistsReady"] == ("False", "NotReady")


def test_a_row_not_written_yet_is_not_a_loss() -> None:
    conditions = held.conditions(["a"], "pool", _pool({}))
    assert _summary(conditions)["SpecialistsGranted"] == ("True", "Granted")


@pytest.mark.parametrize("gone", [None, {**pool_body(), "metadata": {"name": "pool", "deletionTimestamp": "x"}}])
def test_a_deleted_pool_is_a_loss(gone: dict[str, Any] | None) -> None:
    conditions = held.conditions(["a"], "pool", gone)
    assert _summary(conditions) == {
        "PoolReady": ("False", "PoolDeleted"),
        "SpecialistsGranted": ("False", "SpecialistLost"),
        "SpecialistsReady": ("False", "NotReady"),
    }
    assert _summary(held.conditions([], "pool", gone)) == {"PoolReady": ("False", "PoolDeleted")}


def test_one_warning_per_transition() -> None:
    lost = held.conditions(["gone"], "pool", _pool({}))
    warned = held.warnings([], lost)
    assert [reason for reason, _ in warned] == ["SpecialistLost", "NotReady"]
    assert warned[0][1].startswith("SpecialistsGranted: removed from SpecialistPool 'pool': gone")
    assert held.warnings(lost, lost) == []  # already False for the same reason: no second event
    again = [{**c, "reason": "PoolDeleted"} if c["type"] == "SpecialistsGranted" else c for c in lost]
    assert [reason for reason, _ in held.warnings(lost, again)] == ["PoolDeleted"]


def test_a_claim_carries_the_trainer_and_what_a_running_job_holds() -> None:
    body = job_body(specialists=("b",))
    claim = job.claim_of(body)
    assert (claim.specialists, claim.running, claim.trainer_bytes, claim.trainer_gpu) == (("b",), False, 6 * GIB, None)
    fields = ("specialists", "running", "trainer_bytes", "trainer_gpu")
    body["spec"]["gpuMemoryBytes"] = GIB
    body["status"] = {"pods": ["job-primary"], "specialists": ["a", "b"], "trainerNode": "n", "trainerGpu": 1}
    claim = job.claim_of(body)
    assert tuple(getattr(claim, f) for f in fields) == (("b", "a"), True, GIB, ("n", 1))


def test_startable_jobs_wait_for_nothing_the_pool_decides() -> None:
    result = pool.PoolResult(found=True, admitted={"a", "b"}, ready={"a"}, trainers={"ready": ("n", 0)})
    claims = [
        pool.Claim("ready", ("a",), "1", trainer_bytes=GIB),
        pool.Claim("no-trainer", ("a",), "2", trainer_bytes=GIB),  # its trainer does not fit
        pool.Claim("unready", ("a", "b"), "3", trainer_bytes=GIB),
        pool.Claim("running", ("a",), "4", running=True, trainer_bytes=GIB),
        pool.Claim("nothing", (), "5"),  # waits for no specialist (adapt): never woken by one
        pool.Claim(pool.DEMAND_JOB, ("a",), "6", demand=True),
    ]
    assert job.startable(claims, result, gpu_trainer=True) == ["ready"]
    assert job.startable(claims, result, gpu_trainer=False) == ["ready", "no-trainer"]


def test_a_loss_is_dated_from_when_it_began() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    lost = held.conditions(["a"], "pool", None)  # PoolReady, SpecialistsGranted, SpecialistsReady all False
    assert held.lost_since([], lost, now) == now  # newly lost: from now
    earlier = [{**c, "lastTransitionTime": "2026-01-01T11:55:00Z"} for c in lost]
    assert held.lost_since(earlier, lost, now) == now - timedelta(minutes=5)
    # Held again: nothing is lost, whatever the status said before.
    back = held.conditions(["a"], "pool", _pool({"a": (1, True)}))
    assert held.lost_since(earlier, back, now) is None
    # A condition True before (its transition time is when it became True) is lost only from now.
    was_true = [{**c, "status": "True", "lastTransitionTime": "2026-01-01T10:00:00Z"} for c in lost]
    assert held.lost_since(was_true, lost, now) == now
