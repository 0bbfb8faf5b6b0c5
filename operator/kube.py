"""A small asyncio Kubernetes REST client (aiohttp) used by the handlers and the node agent.

It owns credentials (kopf's own kubeconfig / service-account loaders, so kopf and this client always talk to the
same server as the same identity), merge-patch writes, create-or-patch by deterministic name, and retries of
409 Conflict / 429 / 5xx with backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from swarm.model_server.choices import GROUP, VERSION
from swarm.operator.models import JOB, POOL, PREFIX

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply (a JSON body is valid YAML)
FIELD_MANAGER = "swarm-operator"
RETRIED_STATUSES = {409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
NODES = Resource("", "v1", "nodes", namespaced=False)
DEPLOYMENTS = Resource("apps", "v1", "deployments")
EVENTS = Resource("", "v1", "events")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
PDBS = Resource("policy", "v1", "poddisruptionbudgets")
POOLS = Resource(GROUP, VERSION, POOL.plural)
JOBS = Resource(GROUP, VERSION, JOB.plural)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


FAILURES = (ApiError, aiohttp.ClientError, OSError, asyncio.TimeoutError)  # what a failed API call may raise


def load_connection() -> kopf.ConnectionInfo:
    """In-cluster service account first, else $KUBECONFIG / ~/.kube/config."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig found")
    return info


class Api:
    """One aiohttp session against one API server; all writes are JSON merge patches."""

    def __init__(self, info: kopf.ConnectionInfo, *, retries: int = 6, backoff: float = 0.05) -> None:
        self.server = info.server.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32, ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": "swarm-operator"},
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        retry_conflict: bool = True,
    ) -> Any:
        for attempt in range(self.retries + 1):
            async with self._session.request(
                method, self.server + path, json=body, params=params, headers={"Content-Type": content_type}
            ) as resp:
                if resp.status < 300:
                    return await resp.json(content_type=None)
                text = await resp.text()
                conflict_is_final = resp.status == 409 and not retry_conflict
                if resp.status not in RETRIED_STATUSES or attempt == self.retries or conflict_is_final:
                    raise ApiError(resp.status, f"{method} {path}: {text[:300]}")
                if resp.status == 409 and method == "POST":
                    raise ApiError(409, f"{method} {path}: already exists")
            delay = self.backoff * (2**attempt) * (1 + random.random())
            log.info("retrying %s %s after HTTP %s in %.2fs", method, path, resp.status, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", res.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, res: Resource, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects matching `labels`; filtered here as well, so a server ignoring labelSelector is harmless."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        doc = await self._request("GET", res.path(namespace), params=params)
        items = doc.get("items", [])
        if labels:
            items = [
                i
                for i in items
                if all((i.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items())
            ]
        return items

    async def create(self, res: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", res.path(namespace), body)

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
        """A merge patch. `retry_conflict=False`: a 409 is raised, not retried with the same body (a patch carrying
        metadata.resourceVersion must be rebuilt from a fresh read instead)."""
        return await self._request(
            "PATCH",
            res.path(namespace, name, "status" if status else None),
            patch,
            content_type=MERGE_PATCH,
            retry_conflict=retry_conflict,
        )

    async def server_side_apply(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of `body` as the operator's field manager (forced: the operator owns its children).
        Fields it applied before and leaves out now are removed, unlike a merge patch."""
        meta = body["metadata"]
        return await self._request(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            body,
            content_type=APPLY_PATCH,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        try:
            await self._request(
                "DELETE",
                res.path(namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    async def create_or_get(self, res: Resource, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create by deterministic name, or take the object of that name that exists: (object, created here)."""
        meta = body["metadata"]
        try:
            return await self.create(res, meta.get("namespace"), body), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = await self.get(res, meta.get("namespace"), meta["name"])
        if existing is not None:
            return existing, False
        return await self.create(res, meta.get("namespace"), body), True

    async def apply(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Create by deterministic name; if it exists (a crash-restart, another handler), patch it instead."""
        meta = body["metadata"]
        try:
            return await self.create(res, meta.get("namespace"), body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        return await self.patch(res, meta.get("namespace"), meta["name"], body)

SPEC_HASH_ANNOTATION = f"{PREFIX}spec-hash"


def with_spec_hash(body: dict[str, Any]) -> dict[str, Any]:
    """The body with an annotation hashing its desired state, so unchanged objects are never re-patched."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    meta = body["metadata"]
    return {
        **body,
        "metadata": {**meta, "annotations": {**meta.get("annotations", {}), SPEC_HASH_ANNOTATION: digest}},
    }


@dataclass
class Converged:
    """What `converge` changed: names created and deleted, and each patched object as it was before the patch;
    `listed`: every object it found, as listed before any change (their status is what exists)."""

    created: list[str] = field(default_factory=list)
    patched: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    listed: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"created": len(self.created), "patched": len(self.patched), "deleted": len(self.deleted)}


def contains(live: Any, desired: Any) -> bool:
    """Whether every field `desired` sets has that value in `live` (which may hold more: defaults, status)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    return bool(live == desired)


async def converge(
    api: Api, res: Resource, namespace: str, selector: dict[str, str], desired: list[dict[str, Any]]
) -> Converged:
    """Make the objects labelled `selector` equal `desired`, level-triggered: create missing ones, server-side
    apply those whose desired state changed (a removed key goes too) or that drifted (a hand-scaled Deployment),
    delete extras."""
    done = Converged(listed=await api.list(res, namespace, selector))
    existing = {o["metadata"]["name"]: o for o in done.listed}
    for body in map(with_spec_hash, desired):
        name = body["metadata"]["name"]
        current = existing.pop(name, None)
        if current is None:
            await api.apply(res, body)
            done.created.append(name)
        # Lists of built-in kinds carry no apiVersion/kind on their items: compare the rest.
        elif not contains(current, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}):
            applied = await api.server_side_apply(res, body)
            if applied.get("metadata", {}).get("resourceVersion") != current["metadata"].get("resourceVersion"):
                done.patched[name] = current
    for name in existing:
        log.info("deleting %s %s/%s: no longer desired", res.plural, namespace, name)
        if await api.delete(res, namespace, name):
            done.deleted.append(name)
    return done
