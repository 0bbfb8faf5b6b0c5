"""Pure status derivations: conditions with stable transition times, a job's phase and metrics from its pod.

Metrics contract: the trainer's container ends with a termination message that is a JSON object with any of
`microF1`, `macroF1` (0..1), `throughput` (columns/s), `criticalSteps` (int)
(trainer/commands/metrics_publisher.py); the operator copies it into `SwarmJob.status.metrics`. Malformed JSON or
out-of-range values are ignored with a condition, never a crash; non-finite numbers (which JSON, and so the API server,
cannot carry) are dropped one by one with a condition, the other metrics kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from swarm.operator.models import (
    CONDITION_MESSAGE_MAX,
    ConditionReason,
    ConditionType,
    JobMetrics,
    KindInfo,
    Phase,
    object_problems,
)


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: object) -> datetime | None:
    """A status timestamp (as now_iso writes it) as a datetime; None when absent or unparsable."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def newly(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]], bad: Callable[[Mapping[str, Any]], bool]
) -> list[tuple[str, str]]:
    """(reason, message) of a Warning event for each condition of `after` that is `bad` where `before` (the status's
    conditions) did not have it with the same status and reason: one event per transition, not per reconcile."""
    old = {c.get("type"): c for c in before}
    out = []
    for cond in after:
        if not bad(cond):
            continue
        previous = old.get(cond["type"]) or {}
        if (previous.get("status"), previous.get("reason")) == (cond["status"], cond["reason"]):
            continue
        out.append((str(cond["reason"]), f"{cond['type']}: {cond['message']}"))
    return out


def spec_errors(exc: ValidationError) -> str:
    """A CR spec's validation errors as one readable line: `field.path: message; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def parse_object(info: KindInfo, obj: dict[str, Any]) -> tuple[Any, str]:
    """(the parsed spec, "") or (None, why not) of a custom resource: its spec model (info.spec) and the CRD's rules
    on the object (info.rules: its name), which an API server with an older CRD may not have enforced."""
    try:
        spec = info.spec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        return None, spec_errors(exc)
    problems = object_problems(info.rules, obj)
    return (None, "; ".join(problems)) if problems else (spec, "")


def condition(type_: ConditionType, ok: bool, reason: ConditionReason, message: str = "") -> dict[str, Any]:
    """A condition as written to a status; only the operator's own types and reasons (a ValueError otherwise)."""
    return {
        "type": ConditionType(type_).value,
        "status": "True" if ok else "False",
        "reason": ConditionReason(reason).value,
        "message": message if len(message) <= CONDITION_MESSAGE_MAX else message[: CONDITION_MESSAGE_MAX - 3] + "...",
    }


def merge_conditions(
    old: list[dict[str, Any]], new: list[dict[str, Any]], *, now: str, generation: int | None
) -> list[dict[str, Any]]:
    """Replace conditions by type; keep lastTransitionTime unless the status flipped. Others are kept. The result
    is a metav1.Condition list (models.Condition): one per type, each with reason, message and lastTransitionTime."""
    by_type = {c["type"]: c for c in old}
    for cond in new:
        previous = by_type.get(cond["type"])
        flipped = previous is None or previous.get("status") != cond["status"]
        moment = now if flipped or previous is None else previous.get("lastTransitionTime", now)
        merged = {**cond, "lastTransitionTime": moment}
        if generation is not None:  # optional in metav1.Condition; never null
            merged["observedGeneration"] = generation
        by_type[cond["type"]] = merged
    return sorted(by_type.values(), key=lambda c: c["type"])


def phase_from_pod(pod: dict[str, Any] | None) -> Phase:
    if pod is None:
        return Phase.Pending
    phase = pod.get("status", {}).get("phase", "Pending")
    return Phase(phase) if phase in Phase.__members__ else Phase.Pending


def termination_message(pod: dict[str, Any] | None) -> str | None:
    """The trainer container's termination message, once it has terminated (None before, or without one)."""
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("message"):
            return str(terminated["message"])
    return None


def metrics_from_pod(pod: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """(metrics for status, an error message or None) from the trainer's termination message. A non-finite number
    (`1e400` parses as inf; NaN, Infinity) is dropped with a message and the other metrics are kept: JSON cannot
    carry it, so the API server would refuse the whole status write."""
    raw = termination_message(pod)
    if not raw:
        return {}, None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError(f"not a JSON object (a JSON {type(doc).__name__})")
        known = {field.alias for field in JobMetrics.model_fields.values()}
        # Extra keys (per-class F1, ...) are the trainer's business; only the status fields are copied.
        picked = {k: v for k, v in doc.items() if k in known}
        non_finite = sorted(k for k, v in picked.items() if isinstance(v, float) and not math.isfinite(v))
        metrics = JobMetrics.model_validate({k: v for k, v in picked.items() if k not in non_finite})
    except (ValueError, ValidationError, RecursionError) as exc:
        return {}, f"ignored the trainer's termination message: {str(exc).splitlines()[0]}"
    problem = f"dropped non-finite values in the termination message: {', '.join(non_finite)}" if non_finite else None
    return metrics.model_dump(by_alias=True, exclude_none=True), problem
