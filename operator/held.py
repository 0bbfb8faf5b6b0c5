"""What a running SwarmJob holds, checked against its pool (pure): the conditions that say whether its pool and
every specialist it was granted are still there and ready, and the Warning events their transitions call for.

A running job's claim is protected by the pool's plan (pool.plan places it first, without the reserve), but some
losses the plan cannot prevent: the pool is deleted, a specialist is removed from the pool's spec (its Deployment
and Service go), or one stops being ready (its pod evicted, its node gone). The job is then told: PoolReady,
SpecialistsGranted or SpecialistsReady goes False with the reason, and a Warning event is posted on the job once
per transition. Its trainer pod keeps running (it sees the loss as failed calls); the job recovers its conditions
when what it holds comes back (a re-created pool plans its running claims first; an evicted specialist or one whose
node went is placed anew under the job's claim).

The grace policy: a loss that lasts `LOSS_GRACE_SECONDS` (SWARM_SPECIALIST_LOSS_GRACE_SECONDS, 300 by default;
0 or less: never) since the first of these conditions went False fails the job (Complete False, SpecialistLost)
and deletes its trainer pod, whatever backoffLimit says: a new trainer pod would find the same pool. Within it the
job stays Running and may recover; past it, a trainer that cannot finish no longer holds its GPU and specialists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from swarm.operator.models import ConditionReason, ConditionType
from swarm.operator.status import condition, newly, parse_time

LOSS_GRACE_SECONDS = float(os.environ.get("SWARM_SPECIALIST_LOSS_GRACE_SECONDS", "300"))
HELD = {ConditionType.PoolReady, ConditionType.SpecialistsGranted, ConditionType.SpecialistsReady}


def conditions(held: Iterable[str], pool_name: str, pool: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """PoolReady, SpecialistsGranted and SpecialistsReady of a running job that holds the specialists `held`, from
    its pool object as it is now (None: gone). A specialist whose pool row is missing counts as still held (the
    pool's status may lag its spec by one reconcile)."""
    names = sorted(held)
    if pool is None or (pool.get("metadata") or {}).get("deletionTimestamp"):
        message = f"SpecialistPool {pool_name!r} was deleted while the job ran"
        out = [condition(ConditionType.PoolReady, False, ConditionReason.PoolDeleted, message)]
        if names:
            lost = f"lost with SpecialistPool {pool_name!r}: {', '.join(names)}"
            out.append(condition(ConditionType.SpecialistsGranted, False, ConditionReason.SpecialistLost, lost))
            out.append(condition(ConditionType.SpecialistsReady, False, ConditionReason.NotReady, lost))
        return out
    in_spec = {s.get("name") for s in (pool.get("spec") or {}).get("specialists") or [] if isinstance(s, dict)}
    rows = {
        r.get("name"): r for r in (pool.get("status") or {}).get("specialists") or [] if isinstance(r, dict)
    }
    removed = [n for n in names if n not in in_spec]
    stopped = [n for n in names if n in in_spec and n in rows and not rows[n].get("replicas")]
    unready = [n for n in names if rows.get(n, {}).get("replicas") and not rows[n].get("ready")]
    out = [condition(ConditionType.PoolReady, True, ConditionReason.PoolFound, f"SpecialistPool {pool_name!r}")]
    if removed or stopped:
        parts = [f"removed from SpecialistPool {pool_name!r}: {', '.join(removed)}"] if removed else []
        parts += [f"scaled to zero: {', '.join(stopped)}"] if stopped else []
        message = "; ".join(parts)
        out.append(condition(ConditionType.SpecialistsGranted, False, ConditionReason.SpecialistLost, message))
    else:
        granted = ", ".join(names) or "none requested"
        out.append(condition(ConditionType.SpecialistsGranted, True, ConditionReason.Granted, granted))
    down = [*removed, *stopped, *unready]
    if down:
        why = "; ".join(f"{n} ({rows.get(n, {}).get('message') or 'not ready'})" for n in unready)
        message = f"not ready: {', '.join(down)}" + (f" ({why})" if why else "")
        out.append(condition(ConditionType.SpecialistsReady, False, ConditionReason.NotReady, message))
    else:
        out.append(condition(ConditionType.SpecialistsReady, True, ConditionReason.AllReady, ", ".join(names)))
    return out


def warnings(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(reason, message) of a Warning event for each condition of `after` that is False where `before` (the
    status's conditions) did not have it False for the same reason: one event per transition, not per reconcile."""
    return newly(before, after, lambda cond: cond["status"] == "False")


def lost_since(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]], now: datetime
) -> datetime | None:
    """Since when the job has lost something it holds: the earliest moment one of `after`'s held conditions went
    False (`before`: the status's conditions, whose lastTransitionTime says when one already False went so; one
    newly False went now). None when all of them are True."""
    old = {c.get("type"): c for c in before}
    moments = []
    for cond in after:
        if cond.get("type") not in HELD or cond.get("status") != "False":
            continue
        previous = old.get(cond["type"]) or {}
        stamp = parse_time(previous.get("lastTransitionTime")) if previous.get("status") == "False" else None
        moments.append(stamp or now)
    return min(moments, default=None)

