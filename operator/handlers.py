"""kopf registrations: settings, login, in-memory indices of GPU nodes and job claims, and the thin handlers
that call `pool.reconcile` / `job.reconcile` (counted and timed: observability.reconciling), and the pool watch
that feeds the pools' gauges. Importing this module registers everything with kopf.

Tunables (environment): SWARM_RESYNC_SECONDS (pool resync timer: node capacity changes, idle timeouts and expired
demand; 30), SWARM_RETRY_SECONDS (delay before a Pending job retries; 15), SWARM_POD_TEMPLATES, SWARM_IMAGE.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from typing import Any

import kopf

from swarm.operator import builders, job, observability, pool
from swarm.operator.budget import GPU_MEMORY_ANNOTATION
from swarm.operator.kube import PODS, Api, load_connection
from swarm.operator.models import DEMAND_ANNOTATION, GROUP, JOB, POOL, PREFIX, VERSION

RESYNC_SECONDS = float(os.environ.get("SWARM_RESYNC_SECONDS", "30"))
RETRY_SECONDS = float(os.environ.get("SWARM_RETRY_SECONDS", "15"))
NODES_KEY = "nodes"
TRAINER_PODS = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY, builders.LABEL_COMPONENT: "trainer"}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress lives in annotations, so the CRDs' status schemas stay strict (no status.kopf field).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{PREFIX}finalizer"
    # No CRD/namespace scanning: RBAC stays least-privilege (the namespaces are given explicitly).
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    # kopf holds all handlers until every indexed object's worker goes idle; 5 s (default) delays startup.
    settings.queueing.idle_timeout = 0.5
    # A pool or job being deleted keeps its finalizer until its resync timer has exited; one caught mid-reconcile is
    # re-checked only every `cancellation_polling` seconds (60 by default: a deleted pool lingered a minute).
    settings.background.cancellation_polling = 2.0
    memo.api = Api(load_connection())
    memo.templates = builders.load_templates()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return load_connection()


@kopf.on.probe(id="api")
def probe(memo: kopf.Memo, **_: Any) -> bool:
    return hasattr(memo, "api")


# ---------------------------------------------------------------------------------------------- indices
# The `type: ignore[arg-type]`s below: kopf's callback protocols (kopf._core.intents.callbacks) type `namespace` as
# str | None for every resource (always a str for these namespaced ones) and cannot name the indices (gpu_nodes,
# pool_claims) that kopf passes as keyword arguments, so handlers that take either do not match them.
@kopf.index("", "v1", "nodes")
def gpu_nodes(name: str, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any) -> dict[str, Any]:
    return {NODES_KEY: (name, dict(labels), annotations.get(GPU_MEMORY_ANNOTATION))}


@kopf.index(GROUP, VERSION, JOB.plural)  # type: ignore[arg-type]
def pool_claims(body: kopf.Body, namespace: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    if not job.is_active(dict(body)):
        return {}  # an empty mapping drops the job's earlier entry (None would keep it)
    return {(namespace, spec.get("poolRef")): job.claim_of(dict(body))}


def _nodes(index: kopf.Index) -> list[pool.NodeReading]:
    return list(index.get(NODES_KEY, []))


def _claims(index: kopf.Index, namespace: str, pool_name: str) -> list[pool.Claim]:
    return list(index.get((namespace, pool_name), []))


def _reconcile_pool(
    memo: kopf.Memo, namespace: str, name: str, gpu_nodes: kopf.Index, pool_claims: kopf.Index
) -> Awaitable[pool.PoolResult]:
    """pool.reconcile with the live indices (read once the namespace lock is held)."""
    return pool.reconcile(
        memo.api,
        namespace,
        name,
        lambda: _nodes(gpu_nodes),
        lambda: _claims(pool_claims, namespace, name),
        memo.templates,
    )


def _reconcile_job(
    memo: kopf.Memo, namespace: str, name: str, pool_name: str, gpu_nodes: kopf.Index, pool_claims: kopf.Index
) -> Awaitable[job.Outcome]:
    """job.reconcile with the live indices of its pool."""
    return job.reconcile(
        memo.api,
        namespace,
        name,
        lambda: _nodes(gpu_nodes),
        lambda: _claims(pool_claims, namespace, pool_name),
        memo.templates,
    )


# ---------------------------------------------------------------------------------------------- pools
@kopf.on.resume(GROUP, VERSION, POOL.plural, id="pool-resume")
@kopf.on.create(GROUP, VERSION, POOL.plural, id="pool-create")
@kopf.on.update(GROUP, VERSION, POOL.plural, id="pool-update")
@kopf.timer(GROUP, VERSION, POOL.plural, id="pool-resync", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)  # type: ignore[arg-type]
@observability.reconciling(POOL.kind)
async def reconcile_pool(
    name: str, namespace: str, memo: kopf.Memo, gpu_nodes: kopf.Index, pool_claims: kopf.Index, **_: Any
) -> None:
    await _reconcile_pool(memo, namespace, name, gpu_nodes, pool_claims)


# The annotation service's demand (the pool's swarm.ai/demand annotation, model_server/demand.py). kopf leaves every
# annotation under its own storage prefix (swarm.ai/, progress and diff base) out of what its update handlers compare,
# even as a handler field, so a change of the demand would wait for the resync timer: this handler sees every event
# of a pool that has the annotation and reconciles when its value differs from the last one reconciled.
_demand_seen: dict[tuple[str, str], str] = {}


@kopf.on.event(GROUP, VERSION, POOL.plural, annotations={DEMAND_ANNOTATION: kopf.PRESENT}, id="pool-demand")  # type: ignore[arg-type]
async def pool_demand(
    event: kopf.RawEvent,
    name: str,
    namespace: str,
    annotations: kopf.Annotations,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    **_: Any,
) -> None:
    key, value = (namespace, name), annotations.get(DEMAND_ANNOTATION, "")
    if event.get("type") == "DELETED":
        _demand_seen.pop(key, None)
        return
    if _demand_seen.get(key) == value:
        return  # a status write, kopf's own annotations, ...: nothing new to reconcile
    async with observability.reconciling(POOL.kind):
        await _reconcile_pool(memo, namespace, name, gpu_nodes, pool_claims)
    _demand_seen[key] = value  # only once reconciled: a failed reconcile is retried at the next event or resync


# A specialist Deployment changed (the controller's status: readyReplicas; or a hand edit: drift): the pool's status
# comes from what exists, and its reconcile re-applies what was edited.
SPECIALIST_DEPLOYMENTS = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY, builders.LABEL_COMPONENT: "specialist"}


@kopf.on.event("apps", "v1", "deployments", labels=SPECIALIST_DEPLOYMENTS, id="pool-children")  # type: ignore[arg-type]
async def specialist_deployment_event(
    event: kopf.RawEvent,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    **_: Any,
) -> None:
    pool_name = labels.get(builders.LABEL_POOL)
    if not pool_name or event.get("type") not in {"ADDED", "MODIFIED", "DELETED"}:
        return
    async with observability.reconciling(POOL.kind):
        await _reconcile_pool(memo, namespace, pool_name, gpu_nodes, pool_claims)


@kopf.on.event(GROUP, VERSION, POOL.plural, id="pool-metrics")  # type: ignore[arg-type]
async def pool_metrics(event: kopf.RawEvent, name: str, namespace: str, status: kopf.Status, **_: Any) -> None:
    observability.observe_pool(namespace, name, None if event.get("type") == "DELETED" else dict(status))


logging.getLogger("kopf.objects").addFilter(
    observability.QuietSuccess("pool-metrics", "pool-children", "trainer_pod_event", "pool-resync", "job-resync")
)
# A job's reconcile raises kopf.TemporaryError only to wait (job.Outcome.retry): INFO, not ERROR.
logging.getLogger("kopf.objects").addFilter(
    observability.QuietWaiting("job-resume", "job-create", "job-update", "job-resync")
)


# ---------------------------------------------------------------------------------------------- jobs
# The resync timer drives backoff, activeDeadlineSeconds and ttlSecondsAfterFinished, and catches a trainer pod
# deleted while the operator was down.
@kopf.on.resume(GROUP, VERSION, JOB.plural, id="job-resume")
@kopf.on.create(GROUP, VERSION, JOB.plural, id="job-create")
@kopf.on.update(GROUP, VERSION, JOB.plural, field="spec", id="job-update")
@kopf.timer(GROUP, VERSION, JOB.plural, id="job-resync", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)  # type: ignore[arg-type]
@observability.reconciling(JOB.kind)
async def reconcile_job(
    name: str,
    namespace: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    **_: Any,
) -> None:
    outcome = await _reconcile_job(memo, namespace, name, spec.get("poolRef", ""), gpu_nodes, pool_claims)
    if outcome.retry:
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)


@kopf.on.delete(GROUP, VERSION, JOB.plural)  # type: ignore[arg-type]
@observability.reconciling(JOB.kind)
async def delete_job(
    name: str,
    namespace: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    # Owner references would let the garbage collector do this; deleting here makes cleanup immediate and
    # releases the job's claim on the pool before the finalizer goes away.
    if await memo.api.delete(PODS, namespace, builders.trainer_pod_name(name)):
        logger.info("deleted trainer pod of %s", name)
    pool_name = spec.get("poolRef", "")
    claims = lambda: [c for c in _claims(pool_claims, namespace, pool_name) if c.job != name]  # noqa: E731
    await pool.reconcile(memo.api, namespace, pool_name, lambda: _nodes(gpu_nodes), claims, memo.templates)


@kopf.on.event("", "v1", "pods", labels=TRAINER_PODS)  # type: ignore[arg-type]
async def trainer_pod_event(
    event: kopf.RawEvent, memo: kopf.Memo, gpu_nodes: kopf.Index, pool_claims: kopf.Index, **_: Any
) -> None:
    pod: dict[str, Any] = dict(event["object"])
    if event["type"] in {"ADDED", "MODIFIED"}:
        await job.sync_from_pod(memo.api, pod)
    elif event["type"] == "DELETED":  # gone while its job ran: replaced (backoffLimit) or the job fails
        namespace = pod["metadata"]["namespace"]
        name = (pod["metadata"].get("labels") or {}).get(builders.LABEL_JOB)
        pool_name = (pod["metadata"].get("labels") or {}).get(builders.LABEL_POOL, "")
        if name:
            await _reconcile_job(memo, namespace, name, pool_name, gpu_nodes, pool_claims)
