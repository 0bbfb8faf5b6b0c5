"""core/v1 Events: Normal ones for what the operator changes (a specialist Deployment scaled up or down, on its
SpecialistPool; a trainer pod created, on its SwarmJob), Warning ones when a job's condition newly goes False (it
waits for budget or for its specialists, or lost what it held: job.py, held.py; the reason is the condition's), and
on a pool when what it wants newly stops fitting (over budget, no capacity: pool.pool_warnings).

Posting is best effort: a failed post is logged and never fails the reconcile that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from swarm.operator.builders import LABEL_SPECIALIST
from swarm.operator.kube import EVENTS, FAILURES, Api, Converged

log = logging.getLogger(__name__)
COMPONENT = "swarm-operator"
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
TRAINER_POD_CREATED = "TrainerPodCreated"
WARNING = "Warning"


def event_body(
    obj: dict[str, Any], reason: str, message: str, type_: str = "Normal", now: datetime | None = None
) -> dict[str, Any]:
    """A core/v1 Event about `obj` (a full object: its uid ties the event to it)."""
    meta = obj["metadata"]
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post(api: Api, obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
    try:
        await api.create(EVENTS, obj["metadata"]["namespace"], event_body(obj, reason, message, type_))
    except FAILURES as exc:
        log.warning("could not post event %s on %s: %s", reason, obj["metadata"].get("name"), exc)


def scalings(desired: Iterable[dict[str, Any]], converged: Converged) -> list[tuple[dict[str, Any], int, int]]:
    """(Deployment, replicas before, after) of each Deployment that `converge` created with replicas or patched to
    another replica count."""
    changed = []
    for body in desired:
        name = body["metadata"]["name"]
        after = int(body["spec"].get("replicas", 1))
        if name in converged.created:
            before = 0
        elif name in converged.patched:
            before = int(converged.patched[name].get("spec", {}).get("replicas", 1))
        else:
            continue
        if before != after:
            changed.append((body, before, after))
    return changed


async def post_scalings(
    api: Api, pool: dict[str, Any], desired: Iterable[dict[str, Any]], converged: Converged
) -> None:
    """ScaledUp / ScaledDown on the pool for each specialist Deployment whose replica count converge changed."""
    for body, before, after in scalings(desired, converged):
        specialist = (body["metadata"].get("labels") or {}).get(LABEL_SPECIALIST, body["metadata"]["name"])
        await post(
            api,
            pool,
            SCALED_UP if after > before else SCALED_DOWN,
            f"specialist {specialist}: Deployment {body['metadata']['name']} scaled from {before} to {after} replicas",
        )
