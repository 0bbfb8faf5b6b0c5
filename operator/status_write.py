"""Optimistic status writes: a status merge patch carrying the object's metadata.resourceVersion, rebuilt from a
fresh read on 409 Conflict (a bounded number of times).

Two handlers write a SwarmJob's status (its reconcile and its trainer pod's events) and several a pool's; each
rewrites the whole conditions list, so a write based on a stale read would drop another writer's condition. With
the resourceVersion precondition the API server refuses such a write, and `write` merges again from what is there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarm.operator.kube import Api, ApiError, Resource

CONFLICT_RETRIES = 5

# The status fields to write, computed from the object as last read; None: nothing to change.
StatusUpdate = Callable[[dict[str, Any]], dict[str, Any] | None]


async def write(api: Api, res: Resource, obj: dict[str, Any], update: StatusUpdate) -> dict[str, Any] | None:
    """Patch `obj`'s status with `update(current)`, `current` being `obj` first and a fresh read after each
    conflict; the object as written, `obj` when there was nothing to change, None when it is gone (or another
    object of the same name took its place)."""
    meta = obj["metadata"]
    current: dict[str, Any] | None = obj
    for attempt in range(CONFLICT_RETRIES + 1):
        assert current is not None
        body = update(current)
        if body is None:
            return current
        patch: dict[str, Any] = {"status": body}
        version = current["metadata"].get("resourceVersion")
        if version:
            patch["metadata"] = {"resourceVersion": version}
        try:
            return await api.patch(res, meta.get("namespace"), meta["name"], patch, status=True, retry_conflict=False)
        except ApiError as exc:
            if exc.status != 409 or attempt == CONFLICT_RETRIES:
                raise
        current = await api.get(res, meta.get("namespace"), meta["name"])
        if current is None or current["metadata"].get("uid") != meta.get("uid"):
            return None  # gone, or re-created under the same name: not the object this status is about
    raise AssertionError("unreachable")
