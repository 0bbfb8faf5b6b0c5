"""SwarmJob reconciliation: check the pool, ask it for specialists, create the primary trainer pod, track status.

Phase follows the trainer pod (no pod yet: Pending). A job admission.py refuses (extraArgs setting one of the
operator's flags, an output claim its pool does not allow) is Failed before its pool plans for it. A missing pool,
unknown specialists, specialists or a trainer the budget cannot admit, or granted specialists not ready yet leave
the job Pending with a condition saying why (a Warning event when it newly goes False), and `retry` set so the
handler retries: the trainer pod is created only
once its pool admitted its specialists and its trainer's GPU memory (the pod is pinned to that GPU) and every
specialist it is given is ready. It is given what it asked for and ready warm specialists, never another job's.
Once its pod exists the job is admitted for good: a pool change never sends it back to Pending (its claim, with
what it was granted, is placed first, pool.plan); what it holds is checked at each reconcile (held.py).
A trainer pod belongs to the job whose UID its owner reference carries: a same-named pod of an earlier job (deleted
without cascading) is deleted, never adopted, and its events never reach the new job's status.

Like a Kubernetes Job: a trainer pod that fails, or is deleted while the job runs, is replaced while `backoffLimit`
allows (status.failed counts them), else the job is Failed (BackoffLimitExceeded / PodDeleted);
`activeDeadlineSeconds` after status.startTime the pod is deleted and the job Failed (DeadlineExceeded), as it is when
what it holds stays lost past the grace period (SpecialistLost, held.py); a finished
job is deleted `ttlSecondsAfterFinished` after status.completionTime. The handlers' resync timer drives the clocks
and catches pod deletions missed while the operator was down.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from swarm.operator import admission, builders, events, held, pool, status_write
from swarm.operator.kube import JOBS, PODS, POOLS, Api
from swarm.operator.models import JOB, MIB_BYTES, POOL, ConditionReason, ConditionType, Mode, Phase, SwarmJobSpec
from swarm.operator.status import (
    condition,
    merge_conditions,
    metrics_from_pod,
    now_iso,
    parse_object,
    parse_time,
    phase_from_pod,
)

TERMINAL = {Phase.Succeeded.value, Phase.Failed.value}


@dataclass(frozen=True)
class Outcome:
    phase: str
    retry: str | None = None  # why the handler should try again later
    # The wait is for GPU memory budget: the job is woken when its pool's capacity frees (a job deleted or finished,
    # the pool changed: handlers.wake_admitted) and at the resync, not by a retry timer (issue #31, defect 5).
    woken: bool = False


def is_active(body: dict[str, Any]) -> bool:
    """Whether the job still holds specialists (not finished, not being deleted)."""
    return (body.get("status") or {}).get("phase") not in TERMINAL and not body.get("metadata", {}).get(
        "deletionTimestamp"
    )


def served_specialists(mode: str, specialists: Iterable[str]) -> tuple[str, ...]:
    """The specialists a job needs running: its own, except for an adapt job, which reads its experts' weights from
    disk and needs none."""
    return () if mode == Mode.adapt else tuple(specialists)


def owns(job: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether `pod` is this job's: an owner reference carries the job's UID (names and labels are reused by a job
    re-created under the same name)."""
    uid = job["metadata"].get("uid")
    return bool(uid) and any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])


DEFAULT_TRAINER_BYTES = int(SwarmJobSpec.model_fields["gpu_memory_bytes"].default)


def claim_of(body: dict[str, Any]) -> pool.Claim:
    """The job's claim on its pool: its specialists and its trainer's GPU memory; once its trainer pod exists
    (`running`), also what it was granted (status.specialists: warm ones besides those it asked for) and the GPU its
    trainer is pinned to, so that the pool keeps all of it. Its output claim and whether admission.py refuses its
    spec, so that its pool does not plan for a job that will be refused."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    running = bool(status.get("pods"))
    names = served_specialists(spec.get("mode", ""), spec.get("specialists") or ())
    if running:
        names = tuple(dict.fromkeys([*names, *(status.get("specialists") or [])]))
    node, gpu = status.get("trainerNode"), status.get("trainerGpu")
    try:
        trainer_bytes = max(0, int(spec.get("gpuMemoryBytes") or DEFAULT_TRAINER_BYTES))
    except (TypeError, ValueError):
        trainer_bytes = DEFAULT_TRAINER_BYTES
    return pool.Claim(
        job=body["metadata"]["name"],
        specialists=names,
        created=body["metadata"].get("creationTimestamp") or "",
        running=running,
        trainer_bytes=trainer_bytes,
        trainer_gpu=(node, gpu) if isinstance(node, str) and type(gpu) is int else None,
        output=(spec.get("output") or {}).get("claimName"),
        refused=admission.spec_refused(spec),
    )


# The claim of each job as this process last wrote its status, until the SwarmJob index (fed by the watch) shows
# the same claim. A pool reconcile between a write and its watch event would otherwise plan with the job's earlier
# claim: one that just got its trainer pod would still look Pending, and a pool change at that moment (a larger
# reserve) would scale its specialists to zero under it. Keyed by (namespace, job): (poolRef, claim, written at).
_written: dict[tuple[str, str], tuple[str, pool.Claim, float]] = {}
WRITE_SEEN_SECONDS = 120.0  # a watch that lags longer than this has restarted: the index was listed afresh


def _remember(written: dict[str, Any] | None) -> None:
    if written is None:
        return
    meta = written["metadata"]
    key = (meta.get("namespace", ""), meta["name"])
    if is_active(written):
        pool_ref = str((written.get("spec") or {}).get("poolRef", ""))
        _written[key] = (pool_ref, claim_of(written), time.monotonic())
    else:
        _written.pop(key, None)


def claims_seen(namespace: str, pool_name: str, indexed: Iterable[pool.Claim]) -> list[pool.Claim]:
    """The index's claims on a pool, each replaced by what this process last wrote for its job while the index has
    not caught up with that write. A job the index no longer lists (finished, deleted) claims nothing."""
    now = time.monotonic()
    indexed = list(indexed)
    listed = {c.job for c in indexed}
    for gone in [
        k for k, (ref, _, _) in _written.items() if k[0] == namespace and ref == pool_name and k[1] not in listed
    ]:
        del _written[gone]
    out = []
    for claim in indexed:
        key = (namespace, claim.job)
        entry = _written.get(key)
        if entry is None:
            out.append(claim)
            continue
        pool_ref, mine, at = entry
        if mine == claim or now - at > WRITE_SEEN_SECONDS or pool_ref != pool_name:
            del _written[key]  # caught up (or too old to trust)
            out.append(claim)
        else:
            out.append(mine)
    return out


def startable(claims: Iterable[pool.Claim], result: pool.PoolResult, gpu_trainer: bool) -> list[str]:
    """Jobs of these claims that wait for nothing the pool decides any more: not started, every specialist they ask
    for admitted and ready, and their trainer admitted (`gpu_trainer`: it takes GPU memory). Woken when a specialist
    becomes ready (handlers.specialist_deployment_event) rather than at their next retry; a job waiting for budget is
    not in it, so a Deployment event never wakes every pending job."""
    return [
        c.job
        for c in claims
        if not c.running
        and not c.demand
        and c.specialists
        and all(n in result.admitted and n in result.ready for n in c.specialists)
        and (not gpu_trainer or c.trainer_bytes <= 0 or c.job in result.trainers)
    ]


def admitted_waiting(claims: Iterable[pool.Claim], result: pool.PoolResult, gpu_trainer: bool) -> list[str]:
    """Jobs of these claims that have not started and that the pool now admits whole (every specialist they ask
    for, and their trainer when `gpu_trainer`): the ones to wake once capacity frees (they waited for budget and
    have no retry timer, Outcome.woken). Ready or not: one still waiting for a specialist is woken again by its
    Deployment's readiness (startable)."""
    return [
        c.job
        for c in claims
        if not c.running
        and not c.demand
        and result.found
        and all(n in result.admitted for n in c.specialists)
        and (not gpu_trainer or c.trainer_bytes <= 0 or c.job in result.trainers)
    ]


def parse_job(job: dict[str, Any]) -> tuple[SwarmJobSpec | None, str]:
    """(the spec, "") or (None, why not): the spec's model and the CRD's rules on the name."""
    return parse_object(JOB, job)


async def write_status(api: Api, job: dict[str, Any], body: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
    """Set `body`'s fields and merge `conditions` into the job's status, optimistically (status_write): the
    reconcile and the trainer pod's events both write it."""
    generation = job["metadata"].get("generation")
    now = now_iso()

    def update(current: dict[str, Any]) -> dict[str, Any] | None:
        status = current.get("status") or {}
        merged = merge_conditions(status.get("conditions", []), conditions, now=now, generation=generation)
        new = {**status, **body, "observedGeneration": generation, "conditions": merged}
        return new if new != status else None

    _remember(await status_write.write(api, JOBS, job, update))


# One reconcile of a job at a time: kopf runs the resync timer beside the create/update handlers and the trainer pod's
# events, and two reconciles that both find no pod would both admit and create (the second with a stale claim).
_locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


async def reconcile(
    api: Api,
    namespace: str,
    name: str,
    nodes: Iterable[pool.NodeReading] | Callable[[], Iterable[pool.NodeReading]],
    claims: pool.Claims,
    templates: dict[str, dict[str, Any]],
    now: datetime | None = None,
) -> Outcome:
    async with _locks[(namespace, name)]:
        outcome = await _reconcile(api, namespace, name, nodes, claims, templates, now or datetime.now(UTC))
    if outcome.phase == "Gone":
        _locks.pop((namespace, name), None)
    return outcome


async def _reconcile(
    api: Api,
    namespace: str,
    name: str,
    nodes: Iterable[pool.NodeReading] | Callable[[], Iterable[pool.NodeReading]],
    claims: pool.Claims,
    templates: dict[str, dict[str, Any]],
    now: datetime,
) -> Outcome:
    job = await api.get(JOBS, namespace, name)
    if job is None or job["metadata"].get("deletionTimestamp"):
        return Outcome(phase="Gone")
    status = job.get("status") or {}
    if status.get("phase") in TERMINAL:
        return await _expire(api, job, now)
    spec, message = parse_job(job)
    if spec is None:
        await write_status(
            api,
            job,
            {"phase": Phase.Failed.value, "message": message, "completionTime": now_iso(now)},
            [condition(ConditionType.SpecValid, False, ConditionReason.InvalidSpec, message)],
        )
        return Outcome(Phase.Failed.value)

    existing = await api.get(PODS, namespace, builders.trainer_pod_name(name))
    if existing is not None and existing["metadata"].get("deletionTimestamp"):
        return Outcome(status.get("phase", Phase.Pending.value), retry="waiting for the previous trainer pod to go")
    if existing is not None and owns(job, existing):
        return await _follow(api, job, spec, existing, now)
    if existing is None and status.get("pods"):
        lost = f"trainer pod {status['pods'][0]!r} was deleted while the job ran"
        outcome = await _replace_or_fail(api, job, spec, status["pods"][0], lost, ConditionReason.PodDeleted, now)
        if outcome is not None and outcome.phase == Phase.Failed.value:
            return outcome
        job = await api.get(JOBS, namespace, name)
        if job is None or (job.get("status") or {}).get("phase") in TERMINAL:
            return Outcome(phase=((job or {}).get("status") or {}).get("phase", "Gone"))

    refused = await _refused(api, namespace, spec, templates)
    if refused is not None:
        reason, message = refused
        conditions = [condition(ConditionType.SpecValid, False, reason, message)]
        await write_status(
            api, job, {"phase": Phase.Failed.value, "message": message, "completionTime": now_iso(now)}, conditions
        )
        await _warn(api, job, conditions)
        return Outcome(Phase.Failed.value)

    # Shared with every job (and event) asking for this pool meanwhile: waiting jobs do not queue a reconcile each.
    result = await pool.reconcile_coalesced(api, namespace, spec.pool_ref, nodes, claims, templates)
    gpu_trainer = builders.pod_device(templates["trainer"]) == builders.DEVICE_CUDA
    problem = _pool_problem(spec, result, name if gpu_trainer else None)
    if problem is not None:
        type_, reason, message = problem
        woken = reason == ConditionReason.BudgetExceeded
        return await _wait(api, job, [condition(type_, False, reason, message)], message, woken=woken)

    endpoints = {} if spec.mode == Mode.adapt else _granted(spec, result, namespace)
    granted = [
        condition(
            ConditionType.PoolReady, True, ConditionReason.PoolFound, f"SpecialistPool {spec.pool_ref!r} reconciled"
        ),
        condition(
            ConditionType.SpecialistsGranted,
            True,
            ConditionReason.Granted,
            ", ".join(sorted(endpoints)) or "none requested",
        ),
    ]
    # The trainer starts once every specialist it is given serves: it would call a Pending one and fail.
    unready = [n for n in sorted(endpoints) if n not in result.ready]
    if unready:
        why = "; ".join(f"{n} ({result.waiting.get(n, 'not ready')})" for n in unready)
        message = f"waiting for specialists to be ready: {why}"
        not_ready = condition(ConditionType.SpecialistsReady, False, ConditionReason.NotReady, message)
        return await _wait(api, job, [*granted, not_ready], message)

    gpu = result.trainers.get(name) if gpu_trainer else None
    return await _start_trainer(api, job, spec, endpoints, granted, result, templates, gpu, now)


async def _start_trainer(
    api: Api,
    job: dict[str, Any],
    spec: SwarmJobSpec,
    endpoints: dict[str, str],
    granted: list[dict[str, Any]],
    result: pool.PoolResult,
    templates: dict[str, dict[str, Any]],
    gpu: tuple[str, int] | None,
    now: datetime,
) -> Outcome:
    """Everything it waits for is there: create the trainer pod (pinned to `gpu` when the pool placed it), record
    what the job was granted and follow the pod. A same-named pod another object owns is deleted and retried."""
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    status = job.get("status") or {}
    experts = {n: result.models[n] for n in spec.specialists} if spec.mode == Mode.adapt else None
    pod_body = builders.trainer_pod(job, spec, endpoints, templates["trainer"], experts=experts, gpu=gpu)
    started = parse_time(status.get("startTime")) or now
    if spec.active_deadline_seconds:  # what is left of it: the kubelet enforces it too
        left = spec.active_deadline_seconds - int((now - started).total_seconds())
        pod_body["spec"]["activeDeadlineSeconds"] = max(1, left)
    pod, created = await api.create_or_get(PODS, pod_body)
    if not owns(job, pod):
        # Left by an earlier job of this name (deleted without cascading): its phase and metrics are not ours.
        await api.delete(PODS, namespace, pod["metadata"]["name"])
        message = f"deleting pod {pod['metadata']['name']!r}, which belongs to another object; retrying"
        await write_status(
            api,
            job,
            {"phase": Phase.Pending.value, "message": message, "pods": []},
            [condition(ConditionType.TrainerPod, False, ConditionReason.ForeignPod, message)],
        )
        return Outcome(Phase.Pending.value, retry=message)
    await write_status(
        api,
        job,
        {
            "specialists": sorted(endpoints),
            "specialistCount": len(endpoints),
            "pods": [pod["metadata"]["name"]],
            "startTime": now_iso(started),
            "output": f"{spec.output.claim_name}/{builders.output_sub_path(name, spec)}" if spec.output else "",
            **({"trainerNode": gpu[0], "trainerGpu": gpu[1]} if gpu else {}),
        },
        [
            *granted,
            condition(ConditionType.SpecialistsReady, True, ConditionReason.AllReady, ", ".join(sorted(endpoints))),
            condition(ConditionType.TrainerPod, True, ConditionReason.Created, pod["metadata"]["name"]),
        ],
    )
    if created:
        await events.post(api, job, events.TRAINER_POD_CREATED, f"created trainer pod {pod['metadata']['name']}")
    return await sync_from_pod(api, pod, job=await api.get(JOBS, namespace, name))


async def _refused(
    api: Api, namespace: str, spec: SwarmJobSpec, templates: dict[str, dict[str, Any]]
) -> admission.Refusal | None:
    """What admission.py refuses of the job, checked before its pool plans for it (the pool ignores its claim too,
    admission.claim_admissible). The pool is read only for an output claim; a missing or invalid pool is the pool's
    problem."""
    refused = admission.refusal(spec, None, templates)
    if refused is not None or spec.output is None:
        return refused
    found = await api.get(POOLS, namespace, spec.pool_ref)
    pool_spec = parse_object(POOL, found)[0] if found is not None else None
    return admission.output_refusal(spec, pool_spec, templates)


async def _follow(api: Api, job: dict[str, Any], spec: SwarmJobSpec, pod: dict[str, Any], now: datetime) -> Outcome:
    """The job's own pod exists: its phase and metrics into the status, what it holds checked (held.py), and
    the deadline enforced."""
    outcome = await sync_from_pod(api, pod, job=job)
    if outcome.phase not in TERMINAL:
        current = await api.get(JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
        if current is not None and owns(current, pod) and is_active(current):
            failed = await _check_held(api, current, spec, pod, now)
            if failed is not None:
                return failed
    started = parse_time((job.get("status") or {}).get("startTime"))
    deadline = spec.active_deadline_seconds
    if outcome.phase in TERMINAL or not deadline or started is None:
        return outcome
    if (now - started).total_seconds() < deadline:
        return outcome
    message = f"activeDeadlineSeconds ({deadline}) passed: trainer pod {pod['metadata']['name']!r} stopped"
    await finish(api, job, Phase.Failed, ConditionReason.DeadlineExceeded, message, now)
    await api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
    return Outcome(Phase.Failed.value)


async def finish(
    api: Api, job: dict[str, Any], phase: Phase, reason: ConditionReason, message: str, now: datetime
) -> None:
    """Mark the job terminal (its claim on the pool goes with it)."""
    await write_status(
        api,
        job,
        {"phase": phase.value, "message": message, "completionTime": now_iso(now)},
        [condition(ConditionType.Complete, phase == Phase.Succeeded, reason, message)],
    )


async def _replace_or_fail(
    api: Api,
    job: dict[str, Any],
    spec: SwarmJobSpec,
    pod_name: str,
    why: str,
    final: ConditionReason,
    now: datetime,
) -> Outcome | None:
    """Trainer pod `pod_name` failed or was lost: count it; replace it while backoffLimit allows (Pending, no pod
    listed: the next reconcile creates one), else fail the job. Check-and-set on status.pods, so that two handlers
    seeing the same loss (a pod event, the resync timer) count it once: None when another one already did."""
    outcome: list[Outcome] = []
    generation = job["metadata"].get("generation")

    def update(current: dict[str, Any]) -> dict[str, Any] | None:
        outcome.clear()
        status = current.get("status") or {}
        if pod_name not in (status.get("pods") or []) or status.get("phase") in TERMINAL:
            return None
        failed = int(status.get("failed") or 0) + 1
        if failed > spec.backoff_limit:
            reason = final if spec.backoff_limit == 0 else ConditionReason.BackoffLimitExceeded
            message = why if spec.backoff_limit == 0 else f"{why}; backoffLimit ({spec.backoff_limit}) reached"
            body: dict[str, Any] = {"phase": Phase.Failed.value, "completionTime": now_iso(now)}
            new = condition(ConditionType.Complete, False, reason, message)
            outcome.append(Outcome(Phase.Failed.value))
        else:
            message = f"{why}; replacing it (retry {failed} of {spec.backoff_limit})"
            body = {"phase": Phase.Pending.value, "pods": []}
            new = condition(ConditionType.TrainerPod, False, ConditionReason.Retrying, message)
            outcome.append(Outcome(Phase.Pending.value, retry=message))
        merged = merge_conditions(status.get("conditions", []), [new], now=now_iso(now), generation=generation)
        return {**status, **body, "message": message, "failed": failed, "conditions": merged}

    written = await status_write.write(api, JOBS, job, update)
    _remember(written)
    return outcome[0] if written is not None and outcome else None


async def _expire(api: Api, job: dict[str, Any], now: datetime) -> Outcome:
    """A finished job: deleted once ttlSecondsAfterFinished has passed since its completionTime."""
    status = job.get("status") or {}
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    done = parse_time(status.get("completionTime"))
    if isinstance(ttl, int) and done is not None and (now - done).total_seconds() >= ttl:
        await api.delete(JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
        return Outcome(phase="Gone")
    return Outcome(phase=status.get("phase", Phase.Failed.value))


async def _wait(
    api: Api, job: dict[str, Any], conditions: list[dict[str, Any]], message: str, woken: bool = False
) -> Outcome:
    """The job waits (Pending) for `message`: the conditions written, a Warning event when one of them newly went
    False, and `retry` set (the handler retries, unless `woken`; a wait is logged at INFO,
    observability.QuietWaiting)."""
    await write_status(api, job, {"phase": Phase.Pending.value, "message": message}, conditions)
    await _warn(api, job, conditions)
    return Outcome(Phase.Pending.value, retry=message, woken=woken)


async def _warn(api: Api, job: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
    """A Warning event on the job for each of `conditions` newly False (`job` as read before they were written)."""
    for reason, message in held.warnings((job.get("status") or {}).get("conditions") or [], conditions):
        await events.post(api, job, reason, message, events.WARNING)


async def _check_held(
    api: Api, job: dict[str, Any], spec: SwarmJobSpec, pod: dict[str, Any], now: datetime
) -> Outcome | None:
    """A running job: whether its pool and the specialists it was granted are still there and ready (held.py); a
    loss that outlasted held.LOSS_GRACE_SECONDS fails the job and deletes its trainer pod (the Failed outcome)."""
    found = await api.get(POOLS, job["metadata"]["namespace"], spec.pool_ref)
    conditions = held.conditions((job.get("status") or {}).get("specialists") or [], spec.pool_ref, found)
    before = (job.get("status") or {}).get("conditions") or []
    await write_status(api, job, {}, conditions)
    await _warn(api, job, conditions)
    since = held.lost_since(before, conditions, now)
    grace = held.LOSS_GRACE_SECONDS
    if since is None or grace <= 0 or (now - since).total_seconds() < grace:
        return None
    lost = "; ".join(c["message"] for c in conditions if c["status"] == "False")
    message = f"lost for over {grace:.0f} s: {lost}; trainer pod {pod['metadata']['name']!r} stopped"
    await finish(api, job, Phase.Failed, ConditionReason.SpecialistLost, message, now)
    await api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
    return Outcome(Phase.Failed.value)


def _pool_problem(
    spec: SwarmJobSpec, result: pool.PoolResult, trainer: str | None = None
) -> tuple[ConditionType, ConditionReason, str] | None:
    """Why the job cannot start yet; `trainer`: the job's name when its trainer needs GPU memory from the pool."""
    if not result.found:
        return ConditionType.PoolReady, ConditionReason.PoolNotFound, result.message
    if not result.valid:
        return (
            ConditionType.PoolReady,
            ConditionReason.PoolInvalid,
            f"SpecialistPool {spec.pool_ref!r} is invalid: {result.message}",
        )
    unknown = [s for s in spec.specialists if s not in result.specialists]
    if unknown:
        return (
            ConditionType.SpecialistsGranted,
            ConditionReason.UnknownSpecialist,
            f"not in SpecialistPool {spec.pool_ref!r}: {', '.join(unknown)}",
        )
    denied = [s for s in served_specialists(spec.mode, spec.specialists) if s not in result.admitted]
    if trainer is not None and trainer not in result.trainers:
        denied.append(f"the trainer ({spec.gpu_memory_bytes // MIB_BYTES} MiB)")
    if denied:
        return (
            ConditionType.SpecialistsGranted,
            ConditionReason.BudgetExceeded,
            f"waiting for GPU memory budget: {', '.join(denied)}",
        )
    return None


def _granted(spec: SwarmJobSpec, result: pool.PoolResult, namespace: str) -> dict[str, str]:
    """Requested specialists first, then ready warm ones up to maxSpecialists: never another job's (it may go when
    that job ends), nor a warm one still starting (the trainer does not wait for one it did not ask for)."""
    warm = [w for w in result.warm if w in result.admitted and w in result.ready and w not in spec.specialists]
    names = list(spec.specialists) + sorted(warm)
    return {n: builders.specialist_endpoint(namespace, spec.pool_ref, n) for n in names[: spec.max_specialists]}


async def sync_from_pod(
    api: Api, pod: dict[str, Any], job: dict[str, Any] | None = None, now: datetime | None = None
) -> Outcome:
    """Copy the trainer pod's phase and metrics (its termination message) into its SwarmJob's status; a pod the job
    does not own is ignored, and so is any pod of a job that has finished. A failed pod is replaced while the job's
    backoffLimit allows."""
    now = now or datetime.now(UTC)
    namespace = pod["metadata"]["namespace"]
    job_name = (pod["metadata"].get("labels") or {}).get(builders.LABEL_JOB)
    job = job or (await api.get(JOBS, namespace, job_name) if job_name else None)
    if job is None:
        return Outcome(phase="Gone")
    current = (job.get("status") or {}).get("phase", Phase.Pending.value)
    listed = pod["metadata"]["name"] in ((job.get("status") or {}).get("pods") or [])
    if not owns(job, pod) or current in TERMINAL or pod["metadata"].get("deletionTimestamp"):
        # an earlier job's pod (job.reconcile deletes it), a finished job, or a pod on its way out
        return Outcome(phase=current)
    phase = phase_from_pod(pod)
    metrics, metrics_error = metrics_from_pod(pod)
    body: dict[str, Any] = {"message": pod.get("status", {}).get("message", "")}
    if metrics:
        body["metrics"] = metrics
    conditions = [
        condition(
            ConditionType.MetricsValid,
            metrics_error is None,
            ConditionReason.Ignored if metrics_error else ConditionReason.Parsed,
            metrics_error or "",
        )
    ]
    if phase == Phase.Failed:
        if not listed:  # already counted and being replaced
            return Outcome(phase=current)
        await write_status(api, job, body, conditions)
        spec, _ = parse_job(job)
        why = f"trainer pod {pod['metadata']['name']!r} failed: {_exit_reason(pod)}"
        if spec is None:
            await finish(api, job, Phase.Failed, ConditionReason.Failed, why, now)
            return Outcome(Phase.Failed.value)
        outcome = await _replace_or_fail(api, job, spec, pod["metadata"]["name"], why, ConditionReason.Failed, now)
        if outcome is not None and outcome.phase != Phase.Failed.value:
            await api.delete(PODS, namespace, pod["metadata"]["name"])
        return outcome or Outcome(phase=current)
    body["phase"] = phase.value
    if phase == Phase.Succeeded:
        body["completionTime"] = now_iso(now)
        conditions.append(
            condition(
                ConditionType.Complete,
                True,
                ConditionReason.Succeeded,
                f"trainer pod finished at {now_iso(now)}",
            )
        )
    await write_status(api, job, body, conditions)
    return Outcome(phase.value)


def _exit_reason(pod: dict[str, Any]) -> str:
    """The container's exit code and reason, or the pod's own reason (e.g. DeadlineExceeded, Evicted)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return f"exit code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})"
    return (pod.get("status") or {}).get("reason") or "unknown reason"
