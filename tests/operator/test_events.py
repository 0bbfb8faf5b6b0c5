"""Which Normal events a converge causes, and what an event says (operator/events.py)."""

from __future__ import annotations

from typing import Any

from swarm.operator import events
from swarm.operator.kube import Converged


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"swarm.ai/specialist": name[-1]}}, "spec": {"replicas": replicas}}


def test_scalings_are_replica_changes_converge_made() -> None:
    desired = [deployment("p-a", 1), deployment("p-b", 0), deployment("p-c", 0), deployment("p-d", 1)]
    converged = Converged(
        created=["p-a", "p-b"],  # created running, created at zero
        patched={"p-c": deployment("p-c", 1), "p-d": deployment("p-d", 1)},  # scaled down, patched otherwise
        deleted=["p-z"],
    )
    found = [(body["metadata"]["name"], before, after) for body, before, after in events.scalings(desired, converged)]
    assert found == [("p-a", 0, 1), ("p-c", 1, 0)]
    assert converged.counts() == {"created": 2, "patched": 2, "deleted": 1}


def test_event_body_points_at_the_object_by_uid() -> None:
    pool = {
        "apiVersion": "swarm.ai/v1alpha1",
        "kind": "SpecialistPool",
        "metadata": {"name": "pool", "namespace": "ns", "uid": "u-1", "resourceVersion": "9"},
    }
    body = events.event_body(pool, events.SCALED_UP, "x" * 2000)
    assert body["involvedObject"] == {
        "apiVersion": "swarm.ai/v1alpha1",
        "kind": "SpecialistPool",
        "name": "pool",
        "namespace": "ns",
        "uid": "u-1",
        "resourceVersion": "9",
    }
    assert (body["type"], body["reason"], len(body["message"])) == ("Normal", "ScaledUp", 1024)
    assert body["metadata"] == {"generateName": "pool.", "namespace": "ns"}


def test_a_pool_warns_once_when_what_it_wants_stops_fitting() -> None:
    from swarm.operator.models import ConditionReason, ConditionType
    from swarm.operator.pool import pool_warnings
    from swarm.operator.status import condition

    over = condition(ConditionType.BudgetExceeded, True, ConditionReason.OverBudget, "not admitted: b")
    within = condition(ConditionType.BudgetExceeded, False, ConditionReason.WithinBudget, "")
    starting = condition(ConditionType.Ready, False, ConditionReason.WarmSetNotReady, "waiting for warm specialists")
    no_room = condition(ConditionType.Ready, False, ConditionReason.WarmSetOverBudget, "warm specialists over budget")
    assert pool_warnings([], [within, starting]) == []  # a pool starting up is not a warning
    assert pool_warnings([within, starting], [over, no_room]) == [
        ("OverBudget", "BudgetExceeded: not admitted: b"),
        ("WarmSetOverBudget", "Ready: warm specialists over budget"),
    ]
    assert pool_warnings([over, no_room], [over, no_room]) == []  # once per transition, not per reconcile
