"""An in-memory stand-in for `kube.Api` (test code): what the unit tests of job.py / pool.py talk to.

Unlike the emulator it behaves like a real API server where these tests need it: a merge patch carrying
metadata.resourceVersion is refused with 409 Conflict unless that is the object's current version (nothing is
retried by this object: `Api._request`'s retries are kube.py's business), every body must be strict JSON (no
Infinity / NaN), status writes go to the status only, and `before_write` runs before each write (to simulate
another writer racing in between a read and a write).
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from swarm.operator.kube import Api, ApiError, Resource


def merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(base.get(key), value)
    return out


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []  # (verb, name, body, options)
        self.before_write: Callable[[str, str], Awaitable[None]] | None = None
        self._revision = itertools.count(1)

    def put(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Store an object as the API server would after a create (uid, resourceVersion, generation)."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._revision))
        self.objects[(res.plural, meta.get("namespace"), meta["name"])] = obj
        return copy.deepcopy(obj)

    def peek(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((res.plural, namespace, name))

    async def _write(self, verb: str, name: str, body: dict[str, Any], **options: Any) -> None:
        json.dumps(body, allow_nan=False)  # a ValueError, as the API server's 400 for Infinity / NaN
        self.writes.append((verb, name, copy.deepcopy(body), options))
        if self.before_write is not None:
            await self.before_write(verb, name)

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((res.plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list(
        self, res: Resource, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (plural, ns, _), o in sorted(self.objects.items())
            if plural == res.plural
            and (namespace is None or ns == namespace)
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in (labels or {}).items())
        ]

    async def create(self, res: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if "name" not in body["metadata"]:  # generateName (events): a unique name, as the API server gives
            meta = body["metadata"]
            body = {**body, "metadata": {**meta, "name": f"{meta.get('generateName', '')}{len(self.objects)}"}}
        await self._write("create", body["metadata"]["name"], body)
        if (res.plural, namespace, body["metadata"]["name"]) in self.objects:
            raise ApiError(409, "already exists")
        return self.put(res, {**body, "metadata": {**body["metadata"], "namespace": namespace}})

    async def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
        retry_conflict: bool = True,
    ) -> dict[str, Any]:
        await self._write("patch-status" if status else "patch", name, patch, retry_conflict=retry_conflict)
        key = (res.plural, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "not found")
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified; please apply your changes to the latest version")
        kept = {k: v for k, v in patch.items() if k != "metadata"}
        if status:
            kept = {"status": kept.get("status")}
        elif "status" in current:
            kept.pop("status", None)
        updated = merge(current, kept)
        if not status and updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] += 1
        updated["metadata"]["resourceVersion"] = str(next(self._revision))
        self.objects[key] = updated
        return copy.deepcopy(updated)

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        await self._write("delete", name, {})
        return self.objects.pop((res.plural, namespace, name), None) is not None

    # The product's logic, on this fake's create, get and patch.
    create_or_get = Api.create_or_get
    apply = Api.apply

    async def server_side_apply(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Approximated by a merge patch (no field ownership here)."""
        meta = body["metadata"]
        return await self.patch(res, meta.get("namespace"), meta["name"], body)
