"""SwarmJob reconciliation: check the pool, ask it for specialists, create the primary trainer pod, track status.

Phase follows the trainer pod (no pod yet: Pending). A missing pool, unknown specialists, or specialists the
budget cannot admit leave the job Pending with a condition saying why, and `retry` set so the handler retries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from swarm.operator import builders, events, pool
from swarm.operator.kube import JOBS, PODS, Api
from swarm.operator.models import ConditionReason, ConditionType, Mode, Phase, SwarmJobSpec
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


def claim_of(body: dict[str, Any]) -> pool.Claim:
    spec = body.get("spec") or {}
    return pool.Claim(
        job=body["metadata"]["name"],
        specialists=served_specialists(spec.get("mode", ""), spec.get("specialists") or ()),
        created=body["metadata"].get("creationTimestamp") or "",
    )


async def write_status(api: Api, job: dict[str, Any], body: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
    status = job.get("status") or {}
    merged = merge_conditions(
        status.get("conditions", []), conditions, now=now_iso(), generation=job["metadata"].get("generation")
    )
    new = {**status, **body, "observedGeneration": job["metadata"].get("generation"), "conditions": merged}
    if new != status:
        await api.patch(JOBS, job["metadata"]["namespace"], job["metadata"]["name"], {"status": new}, status=True)


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
    try:
        spec = SwarmJobSpec.model_validate(job.get("spec") or {})
    except ValidationError as exc:
        message = spec_errors(exc)
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
    pod, created = await api.create_or_get(PODS, pod_body)
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
        ],
    )
    if created:
        await events.post(api, job, events.TRAINER_POD_CREATED, f"created trainer pod {pod['metadata']['name']}")
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
    """Copy the trainer pod's phase and metrics annotation into its SwarmJob's status."""
    namespace = pod["metadata"]["namespace"]
    job_name = (pod["metadata"].get("labels") or {}).get(builders.LABEL_JOB)
    job = job or (await api.get(JOBS, namespace, job_name) if job_name else None)
    if job is None:
        return Outcome(phase="Gone")
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
