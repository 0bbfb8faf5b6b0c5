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
