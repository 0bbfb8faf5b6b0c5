"""SwarmJob reconciliation: check the pool, ask it for specialists, create the primary trainer pod, track status.

Phase follows the trainer pod (no pod yet: Pending). A missing pool, unknown specialists, or specialists the
budget cannot admit leave the job Pending with a condition saying why, and `retry` set so the handler retries.
A trainer pod belongs to the job whose UID its owner reference carries: a same-named pod of an earlier job (deleted
without cascading) is deleted, never adopted, and its events never reach the new job's status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from swarm.operator import builders, pool, status_write
from swarm.operator.kube import JOBS, PODS, Api
from swarm.operator.models import JOB, ConditionReason, ConditionType, Mode, Phase, SwarmJobSpec, object_problems
from swarm.operator.status import (
    condition,
    merge_conditions,
    metrics_from_pod,
    now_iso,
    phase_from_pod,
    spec_errors,
)

TERMINAL = {Phase.Succeeded.value, Phase.Failed.value}


@dataclass(frozen=True)
class Outcome:
    phase: str
    retry: str | None = None  # why the handler should try again later


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


def claim_of(body: dict[str, Any]) -> pool.Claim:
    spec = body.get("spec") or {}
    return pool.Claim(
        job=body["metadata"]["name"],
        specialists=served_specialists(spec.get("mode", ""), spec.get("specialists") or ()),
        created=body["metadata"].get("creationTimestamp") or "",
        running=bool((body.get("status") or {}).get("pods")),
    )


def parse_job(job: dict[str, Any]) -> tuple[SwarmJobSpec | None, str]:
    """(the spec, "") or (None, why not): the spec's model and the CRD's rules on the name."""
    try:
        spec = SwarmJobSpec.model_validate(job.get("spec") or {})
    except ValidationError as exc:
        return None, spec_errors(exc)
    problems = object_problems(JOB.rules, job)
    return (None, "; ".join(problems)) if problems else (spec, "")


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

    await status_write.write(api, JOBS, job, update)


async def reconcile(
    api: Api,
    namespace: str,
    name: str,
    nodes: Iterable[pool.NodeReading],
    claims: Iterable[pool.Claim],
    templates: dict[str, dict[str, Any]],
) -> Outcome:
    job = await api.get(JOBS, namespace, name)
    if job is None or not is_active(job):
        return Outcome(phase=((job or {}).get("status") or {}).get("phase", "Gone"))
    spec, message = parse_job(job)
    if spec is None:
        await write_status(
            api,
            job,
            {"phase": Phase.Failed.value, "message": message},
            [condition(ConditionType.SpecValid, False, ConditionReason.InvalidSpec, message)],
        )
        return Outcome(Phase.Failed.value)

    result = await pool.reconcile(api, namespace, spec.pool_ref, nodes, claims, templates)
    problem = _pool_problem(spec, result)
    if problem is not None:
        type_, reason, message = problem
        await write_status(
            api,
            job,
            {"phase": Phase.Pending.value, "message": message},
            [condition(type_, False, reason, message)],
        )
        return Outcome(Phase.Pending.value, retry=message)

    endpoints = {} if spec.mode == Mode.adapt else _granted(spec, result, namespace)
    experts = {name: result.models[name] for name in spec.specialists} if spec.mode == Mode.adapt else None
    pod_body = builders.trainer_pod(job, spec, endpoints, templates["trainer"], experts=experts)
    pod = await api.apply(PODS, pod_body, patch_existing=False)
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
            "output": f"{spec.output.claim_name}/{builders.output_sub_path(name, spec)}" if spec.output else "",
        },
        [
            condition(
                ConditionType.PoolReady, True, ConditionReason.PoolFound, f"SpecialistPool {spec.pool_ref!r} reconciled"
            ),
            condition(
                ConditionType.SpecialistsGranted,
                True,
                ConditionReason.Granted,
                ", ".join(sorted(endpoints)) or "none requested",
            ),
            condition(ConditionType.TrainerPod, True, ConditionReason.Created, pod["metadata"]["name"]),
        ],
    )
    return await sync_from_pod(api, pod, job=await api.get(JOBS, namespace, name))


def _pool_problem(spec: SwarmJobSpec, result: pool.PoolResult) -> tuple[ConditionType, ConditionReason, str] | None:
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
    if denied:
        return (
            ConditionType.SpecialistsGranted,
            ConditionReason.BudgetExceeded,
            f"waiting for GPU memory budget: {', '.join(denied)}",
        )
    return None


def _granted(spec: SwarmJobSpec, result: pool.PoolResult, namespace: str) -> dict[str, str]:
    """Requested specialists first, then other running ones (warm) up to maxSpecialists."""
    names = list(spec.specialists) + sorted(result.admitted - set(spec.specialists))
    return {n: builders.specialist_endpoint(namespace, spec.pool_ref, n) for n in names[: spec.max_specialists]}


async def sync_from_pod(api: Api, pod: dict[str, Any], job: dict[str, Any] | None = None) -> Outcome:
    """Copy the trainer pod's phase and metrics annotation into its SwarmJob's status; a pod the job does not own
    is ignored."""
    namespace = pod["metadata"]["namespace"]
    job_name = (pod["metadata"].get("labels") or {}).get(builders.LABEL_JOB)
    job = job or (await api.get(JOBS, namespace, job_name) if job_name else None)
    if job is None:
        return Outcome(phase="Gone")
    if not owns(job, pod):  # an earlier job's pod under this job's name: job.reconcile deletes it
        return Outcome(phase=(job.get("status") or {}).get("phase", Phase.Pending.value))
    phase = phase_from_pod(pod)
    metrics, metrics_error = metrics_from_pod(pod)
    body: dict[str, Any] = {"phase": phase.value, "message": pod.get("status", {}).get("message", "")}
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
    if phase.value in TERMINAL:
        conditions.append(
            condition(
                ConditionType.Complete,
                phase == Phase.Succeeded,
                ConditionReason(phase.value),
                f"trainer pod finished at {now_iso(datetime.now(UTC))}",
            )
        )
    await write_status(api, job, body, conditions)
    return Outcome(phase.value)
