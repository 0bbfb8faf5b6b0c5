"""kopf registrations: settings, login, in-memory indices of GPU nodes, job claims and the pools and jobs to resync,
and the thin handlers that call `pool.reconcile` / `job.reconcile` (counted and timed: observability.reconciling),
and the pool watch that feeds the pools' gauges. Importing this module registers everything with kopf.

No handler needs a finalizer (no kopf timer, no on.delete): the resync is one background task (resync.py), a deleted
job's claim is released on its DELETED watch event, and children go by owner references; so pools and jobs are
deleted whether or not the operator runs. A reconcile refused because its namespace is being deleted is logged at
INFO.

Tunables (environment): SWARM_RESYNC_SECONDS (the resync of every pool and job: node capacity changes, idle
timeouts, expired demand, the jobs' clocks and what running jobs hold; 30), SWARM_RETRY_SECONDS (delay before a
Pending job retries; 15), SWARM_SPECIALIST_LOSS_GRACE_SECONDS (how long a running job may miss a specialist it holds
before it fails: held.py; 300), SWARM_POD_TEMPLATES, SWARM_IMAGE.

Many jobs (issue #31, defect 5): a job waiting for GPU memory budget has no retry timer; it is woken when its pool's
capacity frees (a job deleted or finished, the pool's spec changed, a node added or reopened: wake_admitted) and at
the resync. Pool
reconciles asked for while one waits for the namespace lock are shared (pool.reconcile_coalesced), and a specialist
Deployment event that changes nothing a pool reads (deployment_fingerprint) reconciles nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import kopf

from swarm.model_server.choices import DEMAND_ANNOTATION, GROUP, VERSION
from swarm.operator import budget, builders, job, nodes, observability, pool, resync
from swarm.operator.kube import Api, load_connection
from swarm.operator.models import JOB, POOL, PREFIX

RESYNC_SECONDS = float(os.environ.get("SWARM_RESYNC_SECONDS", "30"))
RETRY_SECONDS = float(os.environ.get("SWARM_RETRY_SECONDS", "15"))
NODES_KEY = "nodes"
log = logging.getLogger(__name__)
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


@kopf.on.startup()  # type: ignore[arg-type]
async def start_resync(
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    pool_names: kopf.Index,
    job_names: kopf.Index,
    **_: Any,
) -> None:
    """Start the resync task (resync.py) over the live indices: every pool, then every job."""

    def passes() -> Iterator[list[tuple[str, resync.Reconcile]]]:
        yield [
            (f"SpecialistPool {ns}/{name}", _counted(POOL.kind, partial(
                _reconcile_pool, memo, ns, name, gpu_nodes, pool_claims)))
            for ns, name in _entries(pool_names)
        ]  # fmt: skip
        yield [
            (f"SwarmJob {ns}/{name}", _counted(JOB.kind, partial(
                _reconcile_job, memo, ns, name, ref, gpu_nodes, pool_claims)))
            for ns, (name, ref) in _entries(job_names)
        ]  # fmt: skip

    memo.resync = asyncio.ensure_future(resync.loop(RESYNC_SECONDS, passes))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
    await memo.api.close()


T = TypeVar("T")


def _entries(index: kopf.Index) -> list[tuple[str, Any]]:
    """(namespace, value) of every entry of a namespace-keyed index, de-duplicated (a snapshot: the index changes
    under the resync)."""
    return sorted({(ns, value) for ns in list(index) for value in list(index.get(ns, []))})


def _counted(kind: str, reconcile: Callable[[], Awaitable[T]]) -> resync.Reconcile:
    async def run() -> None:
        async with observability.reconciling(kind):
            await reconcile()

    return run


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
def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, Any]:
    """Every node's summary (nodes.reading: labels, GPU reading, readiness, cordon, taints, allocatable), what the
    planner needs of it and no more."""
    return {NODES_KEY: nodes.reading(body)}


# What each node looked like to the planner when last seen (budget.planning_view): a node added, cordoned, uncordoned,
# tainted or given GPU memory re-plans every pool at once (waiting jobs it now fits start), not at the resync; the
# agent's periodic free-memory reports change nothing a plan reads and cost nothing.
_nodes_seen: dict[str, tuple[object, ...]] = {}


@kopf.on.event("", "v1", "nodes", id="node-changes")  # type: ignore[arg-type]
async def node_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    name: str,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    pool_names: kopf.Index,
    **_: Any,
) -> None:
    kind = event.get("type")
    view = None if kind == "DELETED" else budget.planning_view(nodes.reading(dict(body)))
    before = _nodes_seen.pop(name, None) if view is None else _nodes_seen.get(name)
    if view is not None:
        _nodes_seen[name] = view
    if kind is None or view == before:
        return  # the operator's first listing (every pool is reconciled as it resumes), or nothing a plan reads
    for namespace, pool_name in _entries(pool_names):
        async with observability.reconciling(POOL.kind):
            result = await _reconcile_pool(memo, namespace, pool_name, gpu_nodes, pool_claims)
        await wake_admitted(memo, namespace, pool_name, result, gpu_nodes, pool_claims)


@kopf.index(GROUP, VERSION, JOB.plural)  # type: ignore[arg-type]
def pool_claims(body: kopf.Body, namespace: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    if not job.is_active(dict(body)):
        return {}  # an empty mapping drops the job's earlier entry (None would keep it)
    return {(namespace, spec.get("poolRef")): job.claim_of(dict(body))}


@kopf.index(GROUP, VERSION, POOL.plural)  # type: ignore[arg-type]
def pool_names(name: str, namespace: str, **_: Any) -> dict[str, str]:
    return {namespace: name}


@kopf.index(GROUP, VERSION, JOB.plural)  # type: ignore[arg-type]
def job_names(name: str, namespace: str, spec: kopf.Spec, **_: Any) -> dict[str, tuple[str, str]]:
    return {namespace: (name, str(spec.get("poolRef", "")))}


def _nodes(index: kopf.Index) -> list[pool.NodeReading]:
    return list(index.get(NODES_KEY, []))


def _claims(index: kopf.Index, namespace: str, pool_name: str) -> list[pool.Claim]:
    return job.claims_seen(namespace, pool_name, index.get((namespace, pool_name), []))


def _reconcile_pool(
    memo: kopf.Memo, namespace: str, name: str, gpu_nodes: kopf.Index, pool_claims: kopf.Index
) -> Awaitable[pool.PoolResult | None]:
    """pool.reconcile with the live indices (read once the namespace lock is held), shared with every caller that
    asks for the same pool before it starts (pool.reconcile_coalesced); None: its namespace is being deleted."""
    return _quiet_if_terminating(
        pool.reconcile_coalesced(
            memo.api,
            namespace,
            name,
            lambda: _nodes(gpu_nodes),
            lambda: _claims(pool_claims, namespace, name),
            memo.templates,
        )
    )


def _reconcile_job(
    memo: kopf.Memo, namespace: str, name: str, pool_name: str, gpu_nodes: kopf.Index, pool_claims: kopf.Index
) -> Awaitable[job.Outcome | None]:
    """job.reconcile with the live indices of its pool; None: its namespace is being deleted."""
    return _quiet_if_terminating(
        job.reconcile(
            memo.api,
            namespace,
            name,
            lambda: _nodes(gpu_nodes),
            lambda: _claims(pool_claims, namespace, pool_name),
            memo.templates,
        )
    )


async def _quiet_if_terminating(reconcile: Awaitable[T]) -> T | None:
    """`reconcile`'s result, or None where the API server refused it (403): at INFO when the namespace is being
    deleted, else at WARNING (a namespace whose Roles went first, or RBAC missing), without a traceback."""
    try:
        return await reconcile
    except Exception as exc:
        if resync.namespace_terminating(exc):
            log.info("not reconciled: its namespace is being deleted (%s)", exc)
        elif resync.forbidden(exc):
            log.warning("not reconciled: forbidden (namespace being deleted, or RBAC missing): %s", exc)
        else:
            raise
        return None


# ---------------------------------------------------------------------------------------------- pools
@kopf.on.resume(GROUP, VERSION, POOL.plural, id="pool-resume")
@kopf.on.create(GROUP, VERSION, POOL.plural, id="pool-create")
@kopf.on.update(GROUP, VERSION, POOL.plural, id="pool-update")  # type: ignore[arg-type]
@observability.reconciling(POOL.kind)
async def reconcile_pool(
    name: str, namespace: str, memo: kopf.Memo, gpu_nodes: kopf.Index, pool_claims: kopf.Index, **_: Any
) -> None:
    result = await _reconcile_pool(memo, namespace, name, gpu_nodes, pool_claims)
    await wake_admitted(memo, namespace, name, result, gpu_nodes, pool_claims)  # e.g. a smaller reserve


# The annotation service's demand (the pool's swarm.ai/demand annotation, model_server/serving/demand.py). kopf
# leaves every annotation under its own storage prefix (swarm.ai/, progress and diff base) out of what its update
# handlers compare, even as a handler field, so a change of the demand would wait for the resync timer: this handler
# sees every event of a pool that has the annotation and reconciles when its value differs from the last one
# reconciled.
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
# Each specialist Deployment's fingerprint as last reconciled (issue #31, defect 5: every Deployment event ran a full
# pool reconcile, 26 to bring up the sample pool): an event that changes none of it changes nothing the pool reads.
_deployments_seen: dict[tuple[str, str], str] = {}


def deployment_fingerprint(body: dict[str, Any]) -> str:
    """What a pool reconcile reads or re-applies of its Deployment: the spec (its generation), labels, annotations,
    owners and replicas, whether it is being deleted, and its readiness (status.readyReplicas). The controller's
    other status fields (observedGeneration, updatedReplicas, conditions) are left out."""
    meta = body.get("metadata") or {}
    return json.dumps(
        [
            meta.get("generation"),
            meta.get("labels"),
            meta.get("annotations"),
            [ref.get("uid") for ref in meta.get("ownerReferences") or []],
            bool(meta.get("deletionTimestamp")),
            (body.get("spec") or {}).get("replicas"),
            int((body.get("status") or {}).get("readyReplicas") or 0),
        ],
        sort_keys=True,
        default=str,
    )


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
    kind = event.get("type")
    if not pool_name or kind not in {"ADDED", "MODIFIED", "DELETED"}:
        return
    body: dict[str, Any] = dict(event.get("object") or {})
    key = (namespace, str((body.get("metadata") or {}).get("name", "")))
    seen = None if kind == "DELETED" else deployment_fingerprint(body)
    if seen is not None and _deployments_seen.get(key) == seen:
        return  # a status field the pool's plan does not read (observedGeneration, conditions, ...): nothing to do
    async with observability.reconciling(POOL.kind):
        result = await _reconcile_pool(memo, namespace, pool_name, gpu_nodes, pool_claims)
    if seen is None:
        _deployments_seen.pop(key, None)
    elif result is not None:
        _deployments_seen[key] = seen  # only once reconciled: a failed reconcile is retried at the next event
    if result is None or not result.found:
        return
    # A specialist became ready: the jobs that waited only for it start now, not at their next retry.
    gpu_trainer = builders.pod_device(memo.templates["trainer"]) == builders.DEVICE_CUDA
    for name in job.startable(_claims(pool_claims, namespace, pool_name), result, gpu_trainer):
        async with observability.reconciling(JOB.kind):
            await _reconcile_job(memo, namespace, name, pool_name, gpu_nodes, pool_claims)


# A specialist pod the scheduler cannot place (or places after all): the pool's status says why it waits. Its
# Deployment's fingerprint does not change when that happens, and the scheduler may mark the pod after the reconcile
# its creation caused read it ("pod Pending"), so the reason would wait for the resync. Only changes of the
# scheduler's verdict count: a pod starting or becoming ready costs nothing here.
SPECIALIST_PODS = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY, builders.LABEL_COMPONENT: "specialist"}
_unschedulable_seen: dict[tuple[str, str], str] = {}


@kopf.on.event("", "v1", "pods", labels=SPECIALIST_PODS, id="specialist-pods")  # type: ignore[arg-type]
async def specialist_pod_event(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    **_: Any,
) -> None:
    key, pool_name = (namespace, name), labels.get(builders.LABEL_POOL)
    if event.get("type") == "DELETED":
        _unschedulable_seen.pop(key, None)
        return
    verdict = pool.unschedulable(dict(event.get("object") or {}))
    if not pool_name or _unschedulable_seen.get(key, "") == verdict:
        _unschedulable_seen[key] = verdict
        return
    async with observability.reconciling(POOL.kind):
        result = await _reconcile_pool(memo, namespace, pool_name, gpu_nodes, pool_claims)
    if result is not None:
        _unschedulable_seen[key] = verdict  # only once reconciled: a failed reconcile is retried at the next event


@kopf.on.event(GROUP, VERSION, POOL.plural, id="pool-metrics")  # type: ignore[arg-type]
async def pool_metrics(event: kopf.RawEvent, name: str, namespace: str, status: kopf.Status, **_: Any) -> None:
    observability.observe_pool(namespace, name, None if event.get("type") == "DELETED" else dict(status))


logging.getLogger("kopf.objects").addFilter(
    observability.QuietSuccess(
        "pool-metrics", "pool-children", "specialist-pods", "node-changes", "trainer_pod_event", "job-deleted"
    )
)
# A job's reconcile raises kopf.TemporaryError only to wait (job.Outcome.retry): INFO, not ERROR.
logging.getLogger("kopf.objects").addFilter(observability.QuietWaiting("job-resume", "job-create", "job-update"))


# ---------------------------------------------------------------------------------------------- jobs
# The resync (start_resync) drives backoff, activeDeadlineSeconds and ttlSecondsAfterFinished, checks what running
# jobs hold, and catches a trainer pod deleted while the operator was down.
@kopf.on.resume(GROUP, VERSION, JOB.plural, id="job-resume")
@kopf.on.create(GROUP, VERSION, JOB.plural, id="job-create")
@kopf.on.update(GROUP, VERSION, JOB.plural, field="spec", id="job-update")  # type: ignore[arg-type]
@observability.reconciling(JOB.kind)
async def reconcile_job(
    name: str,
    namespace: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    outcome = await _reconcile_job(memo, namespace, name, spec.get("poolRef", ""), gpu_nodes, pool_claims)
    if outcome is not None and outcome.retry and not outcome.woken:
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)
    if outcome is not None and outcome.retry:
        # Waiting for GPU memory budget: no retry timer (a thousand such jobs would each poll every retry); woken
        # when its pool's capacity frees (wake_admitted) and at the resync. At INFO, like a retried wait.
        logger.info(f"{outcome.retry}; woken when its pool's capacity frees")


@kopf.on.event(GROUP, VERSION, JOB.plural, id="job-deleted")  # type: ignore[arg-type]
async def job_deleted(
    event: kopf.RawEvent,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    **_: Any,
) -> None:
    """A job is gone: its pool re-planned without its claim (its trainer pod goes by its owner reference), and the
    jobs the freed capacity admits woken; likewise a job newly finished (_job_finished). A watch event, not a
    finalizer: the job is deleted whether or not the operator runs (the resync releases the claim of a job deleted
    while it was down)."""
    pool_name = spec.get("poolRef", "")
    if event.get("type") in {"ADDED", "MODIFIED"}:
        await _job_finished(event, namespace, name, pool_name, memo, gpu_nodes, pool_claims)
        return
    if event.get("type") != "DELETED":
        return
    _finished.discard((namespace, name, str(((event.get("object") or {}).get("metadata") or {}).get("uid", ""))))
    claims = lambda: [c for c in _claims(pool_claims, namespace, pool_name) if c.job != name]  # noqa: E731
    async with observability.reconciling(POOL.kind):
        result = await _quiet_if_terminating(
            pool.reconcile(memo.api, namespace, pool_name, lambda: _nodes(gpu_nodes), claims, memo.templates)
        )
    await wake_admitted(memo, namespace, pool_name, result, gpu_nodes, pool_claims, but=name)


# Jobs seen finished (namespace, name, uid): a finished job's claim is released once, at the first event showing it.
_finished: set[tuple[str, str, str]] = set()


async def _job_finished(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    pool_name: str,
    memo: kopf.Memo,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
) -> None:
    """A job that newly shows a terminal phase released its claim (the index has already dropped it: kopf indexes
    an event before its handlers run): its pool re-planned and the jobs it now admits woken."""
    body: dict[str, Any] = dict(event.get("object") or {})
    if (body.get("status") or {}).get("phase") not in job.TERMINAL:
        return
    key = (namespace, name, str((body.get("metadata") or {}).get("uid", "")))
    if key in _finished:
        return
    _finished.add(key)
    async with observability.reconciling(POOL.kind):
        result = await _reconcile_pool(memo, namespace, pool_name, gpu_nodes, pool_claims)
    await wake_admitted(memo, namespace, pool_name, result, gpu_nodes, pool_claims, but=name)


async def wake_admitted(
    memo: kopf.Memo,
    namespace: str,
    pool_name: str,
    result: pool.PoolResult | None,
    gpu_nodes: kopf.Index,
    pool_claims: kopf.Index,
    but: str = "",
) -> None:
    """Capacity freed in the pool (`result`: its reconcile since): reconcile the jobs it now admits whole that have
    not started (job.admitted_waiting), except `but` (the job that freed it)."""
    if result is None or not result.found:
        return
    gpu_trainer = builders.pod_device(memo.templates["trainer"]) == builders.DEVICE_CUDA
    for name in job.admitted_waiting(_claims(pool_claims, namespace, pool_name), result, gpu_trainer):
        if name == but:
            continue
        async with observability.reconciling(JOB.kind):
            await _reconcile_job(memo, namespace, name, pool_name, gpu_nodes, pool_claims)


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
