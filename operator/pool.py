"""SpecialistPool reconciliation: budget from node GPU readings, which specialists run, their objects, status.

Priority when the budget is short: what running jobs hold (their specialists and trainers: never evicted by a pool
change, the reserve does not apply to them), the warm set (in spec order), then specialists requested by pending
SwarmJobs (oldest job first), then those the annotation service demanded less than `idleTimeoutSeconds` ago (the
pool's `swarm.ai/demand` annotation, see model_server/serving/demand.py; oldest demand first), then cold
specialists still inside their idle timeout. A job's claim is all or nothing and includes its trainer's GPU memory
(`gpuMemoryBytes`, placed on one GPU: the trainer pod is pinned there and counted in status.gpuUsage): one naming a
specialist the pool lacks claims nothing, nor does one that admission.py refuses (an output claim the pool does
not allow, extraArgs overriding the operator's flags), and one whose specialists and trainer do not all fit admits
none of them (the job waits; later claims may still fit). Each
specialist always has a Deployment (replicas 0 or 1) and a Service, so scaling a cold one from zero is a replica
patch. A demand entry that does not parse (not a JSON object, a bad time, an unknown name)
is ignored and named in the pool's DemandValid condition.

Pools whose node selectors share GPUs share their memory: a pool plans with what the other pools' admitted
specialists leave (their status.gpuUsage), first come, first served; memory a pool releases reaches the others at
their next reconcile (the resync timer at the latest). One asyncio lock per namespace serialises every pool
reconcile there (pool events, the resync timer, jobs asking for specialists), so that two pools never plan with
the same free bytes. The callers that pass the live indices (jobs, the resync, specialist Deployment events) share
one reconcile per pool among all that ask before it takes the lock (reconcile_coalesced): a thousand waiting jobs
retrying cost a few pool reconciles, not a thousand.

Only nodes that can take the pool's pods count (Ready, schedulable, taints tolerated by the specialist template,
the GPU-memory resource advertised: nodes.py), and a placement keeps within each node's allocatable CPU and memory
(the pod templates' requests) less what other pools' admitted specialists request there. A specialist pinned to a
node that was cordoned, tainted or lost is placed anew, except a running job's specialist still ready on a cordoned
node (moving it would restart it under the job).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from swarm.model_server.choices import DEMAND_ANNOTATION
from swarm.operator import admission, budget, builders, events, status_write
from swarm.operator.kube import DEPLOYMENTS, FAILURES, PDBS, PODS, POOLS, SERVICES, Api, ApiError, converge
from swarm.operator.models import POOL, ConditionReason, ConditionType, SpecialistPoolSpec, SpecialistState
from swarm.operator.nodes import NodeReading, pod_requests
from swarm.operator.status import condition, merge_conditions, newly, now_iso, parse_object

log = logging.getLogger(__name__)
DEMAND_JOB = "annotation-demand"  # the claimant named in status rows (requestedBy) for the annotation service
DEMAND_CLOCK_SKEW_S = 60  # a demand time at most this far in the future counts as now; further: ignored
_SHOWN = 5  # problems named in the DemandValid message at most
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


@dataclass(frozen=True)
class Claim:
    """A request for specialists of a pool: a job's (from the SwarmJob index), or the annotation service's demand
    (`demand`: after every job's claim; `created` is then the time of the demand, kept as lastRequested)."""

    job: str
    specialists: tuple[str, ...]
    created: str
    demand: bool = False
    running: bool = False  # the job's trainer pod exists: its specialists and trainer are never evicted
    trainer_bytes: int = 0  # GPU memory of the job's trainer pod: placed with its specialists (0: a CPU trainer)
    trainer_gpu: tuple[str, int] | None = None  # (node, GPU index) the running trainer pod is pinned to
    output: str | None = None  # the job's output claim: one the pool does not allow claims nothing (admission.py)
    refused: bool = False  # admission.py refuses the job whatever its pool (extraArgs): it claims nothing


TRAINER = "trainer/"  # prefix of a trainer's name in a placement ("/" is in no specialist name)


def trainer_key(job: str) -> str:
    """The name a job's trainer has in the placement, beside its specialists' names."""
    return f"{TRAINER}{job}"


@dataclass
class PoolResult:
    found: bool
    valid: bool = True
    message: str = ""
    admitted: set[str] = field(default_factory=set)
    specialists: set[str] = field(default_factory=set)
    models: dict[str, str] = field(default_factory=dict)  # specialist -> model path (for mode adapt)
    warm: list[str] = field(default_factory=list)  # the pool's warm set, in spec order
    ready: set[str] = field(default_factory=set)  # admitted specialists whose Deployment reports a ready replica
    waiting: dict[str, str] = field(default_factory=dict)  # admitted, not ready: why (the scheduler's message)
    trainers: dict[str, tuple[str, int]] = field(default_factory=dict)  # job -> (node, GPU index) of its trainer


_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _safe_time(value: object) -> datetime | None:
    """An aware time from a status field, or None (absent, not a string, unparsable, naive: the status may be
    hand-edited)."""
    try:
        stamp = _parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return stamp if stamp is not None and stamp.tzinfo is not None else None


def _shown(text: str) -> str:
    """A name from the annotation, fit for a message: repr'd, cut to 64 characters."""
    return repr(text) if len(text) <= 64 else f"{text[:64]!r}..."


def _shown_json(value: object) -> str:
    """A value from the annotation, fit for a message: as JSON, cut to 64 characters."""
    text = json.dumps(value)
    return text if len(text) <= 64 else f"{text[:64]}..."


def parse_demand(raw: str | None, names: Collection[str], now: datetime) -> tuple[dict[str, datetime], list[str]]:
    """The pool's demand annotation as (specialist -> time of its latest demand, problems). Entries that do not
    parse are left out and described in `problems` (bounded: never the whole annotation): a value that is not a JSON
    object, a name not among `names`, a time that is not an RFC3339 string with an offset, or one more than
    DEMAND_CLOCK_SKEW_S in the future (nearer future times count as `now`)."""
    if raw is None or not raw.strip():
        return {}, []
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, [f"not JSON ({exc.msg})"]
    if not isinstance(doc, dict):
        kind = _JSON_KINDS.get(type(doc), type(doc).__name__)
        return {}, [f"not a JSON object of specialist -> time (a JSON {kind})"]
    demand: dict[str, datetime] = {}
    problems: list[str] = []
    for name, value in doc.items():
        if name not in names:
            problems.append(f"{_shown(name)} is not a specialist of this pool")
            continue
        try:
            stamp = _parse_time(value) if isinstance(value, str) else None
        except ValueError:
            stamp = None
        if stamp is None or stamp.tzinfo is None:
            problems.append(f"{_shown(name)}: {_shown_json(value)} is not an RFC3339 time with an offset")
            continue
        if (stamp - now).total_seconds() > DEMAND_CLOCK_SKEW_S:
            problems.append(f"{_shown(name)}: {_shown_json(value)} is in the future")
            continue
        demand[name] = min(stamp.astimezone(UTC), now)
    return demand, problems


def demand_claims(demand: Mapping[str, datetime], now: datetime, idle_timeout_seconds: float) -> list[Claim]:
    """One claim per specialist demanded less than `idle_timeout_seconds` before `now`."""
    return [
        Claim(DEMAND_JOB, (name,), now_iso(stamp), demand=True)
        for name, stamp in sorted(demand.items())
        if (now - stamp).total_seconds() < idle_timeout_seconds
    ]


def freshness_condition(gpus: list[budget.Gpu]) -> dict[str, Any]:
    stale = sorted({g.node for g in gpus if g.stale})
    if not stale:
        return condition(ConditionType.CapacityFresh, True, ConditionReason.FreshReadings)
    return condition(
        ConditionType.CapacityFresh,
        False,
        ConditionReason.StaleReading,
        f"no node agent reading for over {budget.STALE_AFTER_SECONDS:.0f} s from {', '.join(stale[:_SHOWN])}"
        f"{' and more' if len(stale) > _SHOWN else ''}: their last readings are kept, nothing is evicted",
    )


def unfit_note(unfit: list[str]) -> str:
    """What the Ready condition says of the matching nodes that take no new pods (budget.unfit_nodes), if any."""
    if not unfit:
        return ""
    return f"; taking no new pods: {', '.join(unfit[:_SHOWN])}{' and more' if len(unfit) > _SHOWN else ''}"


def demand_condition(problems: list[str]) -> dict[str, Any]:
    if not problems:
        return condition(ConditionType.DemandValid, True, ConditionReason.Parsed)
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return condition(
        ConditionType.DemandValid,
        False,
        ConditionReason.Ignored,
        f"ignored in {DEMAND_ANNOTATION}: {'; '.join(problems[:_SHOWN])}{more}",
    )


Group = list[tuple[str, int]]  # names and GPU bytes placed together, all or none (budget.place_protected)


def plan(
    spec: SpecialistPoolSpec,
    gpus: list[budget.Gpu],
    claims: Iterable[Claim],
    previous: Mapping[str, Mapping[str, Any]],
    now: datetime,
    taken: Mapping[budget.GpuKey, int] | None = None,
    room: Mapping[str, budget.Room] | None = None,
    requests: budget.Room = (0, 0),
    trainer_requests: budget.Room = (0, 0),
) -> tuple[list[dict[str, Any]], budget.Placement]:
    """Pure planning step: per-specialist status rows and the placement (what runs); `taken`: bytes other pools
    hold per GPU; `room`: allocatable (CPU, memory) per node, which a specialist's `requests` and a GPU trainer's
    `trainer_requests` take from. A closed GPU (its node cordoned, budget.Gpu.closed) keeps only what a running job
    holds there and is ready (a status row's `ready`) or its running trainer; anything else pinned there is placed
    anew. Jobs' claims come before demand claims (`Claim.demand`, see `demand_claims`). Admission is all or
    nothing per job claim, its trainer (`Claim.trainer_bytes`, placed under `trainer_key(job)`) included: one
    naming an unknown specialist claims nothing (unless it runs: then it keeps what is known), one that does not fit
    admits none of its specialists nor its trainer (earlier claims and the warm set keep theirs). Running claims
    are placed first, against the GPUs without the pool's reserve (`budget.place_protected`). A specialist's
    lastRequested is now for a granted job claim, the time of the demand for the annotation service's."""
    sizes = _resident_sizes(spec)
    ordered = sorted(claims, key=lambda c: (c.demand, c.created, c.job))
    # A job's claim naming a specialist the pool does not have claims nothing: the job stays Pending
    # (UnknownSpecialist), and its known specialists would be held up for nothing.
    # A running job keeps what it holds even when the spec no longer names some of it (the job is told: job.py).
    ordered = [c for c in ordered if c.demand or c.running or all(n in sizes for n in c.specialists)]
    jobs = [c for c in ordered if not c.demand]
    protected, groups = _groups(spec, ordered, jobs, sizes, previous, now)
    wanted = {n for group in (*protected, *groups) for n, _ in group}
    demand_requests = {n: requests for n in sizes} | {trainer_key(c.job): trainer_requests for c in jobs}
    placement = budget.place_protected(
        budget.usable(gpus, 0, taken, closed_too=True),
        budget.usable(gpus, spec.memory_reserve_per_gpu, taken),
        protected,
        groups,
        _running_on(gpus, previous, protected, jobs),
        budget.limits_of(gpus, room or {}, demand_requests),
    )
    requested_by, last_requested = _requests(ordered, sizes, placement, previous, now)
    rows = [
        _status_row(s.name, spec, gpus, sizes, placement, wanted, requested_by, last_requested)
        for s in spec.specialists
    ]
    return rows, placement


def _resident_sizes(spec: SpecialistPoolSpec) -> dict[str, int]:
    """Each specialist's resident GPU memory (budget.resident_bytes of its spec)."""
    return {
        s.name: budget.resident_bytes(
            dtype=s.dtype, params=s.params, resident=s.resident_bytes, activation=s.activation_bytes
        )
        for s in spec.specialists
    }


def _groups(
    spec: SpecialistPoolSpec,
    ordered: list[Claim],
    jobs: list[Claim],
    sizes: Mapping[str, int],
    previous: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> tuple[list[Group], list[Group]]:
    """(protected, groups): the running jobs' groups, placed first without the reserve, and every other group in
    placement order (warm set, pending jobs, demand, idle-kept specialists)."""

    def within_idle(name: str) -> bool:
        stamp = _safe_time(previous.get(name, {}).get("lastRequested"))
        was_running = previous.get(name, {}).get("replicas", 0) > 0
        return was_running and stamp is not None and (now - stamp).total_seconds() < spec.idle_timeout_seconds

    # Placed in this order, each group whole or not at all: a job runs with all of its specialists (so a claim
    # that does not fit admits none of them), a demand claim is one specialist. Idle ones come last; a name an
    # earlier group placed costs nothing.
    # A running job's specialists come first: a pool change (a new warm specialist, a larger reserve) must not
    # evict what a trainer pod is using.
    # A job's group is its specialists and its trainer: it is admitted only when both fit.
    def job_group(claim: Claim) -> Group:
        trainer = [(trainer_key(claim.job), claim.trainer_bytes)] if claim.trainer_bytes > 0 else []
        return [(n, sizes[n]) for n in claim.specialists if n in sizes] + trainer

    protected = [job_group(c) for c in jobs if c.running]
    groups = [[(w, sizes[w])] for w in spec.warm]
    groups += [job_group(c) for c in jobs if not c.running]
    groups += [[(n, sizes[n])] for c in ordered if c.demand for n in c.specialists if n in sizes]
    # Within its idle timeout a running specialist stays up, even one a denied claim names.
    groups += [[(s.name, sizes[s.name])] for s in spec.specialists if s.name not in spec.warm and within_idle(s.name)]
    return protected, groups


def _running_on(
    gpus: list[budget.Gpu], previous: Mapping[str, Mapping[str, Any]], protected: list[Group], jobs: list[Claim]
) -> dict[str, int]:
    """The GPU slot each running specialist (per its status row) and running trainer stays on, if it may."""
    running_on = {
        name: slot
        for name, row in previous.items()
        if row.get("replicas") and (slot := budget.slot_of(gpus, row.get("node"), row.get("gpu"))) is not None
    }
    # A closed GPU keeps a running job's specialist whose pod is there and ready (moving it would restart it under
    # the job); one that is not (drained, pending) is placed anew, as is everything else pinned there.
    staying = {n for group in protected for n, _ in group if previous.get(n, {}).get("ready")}
    running_on = {n: slot for n, slot in running_on.items() if not gpus[slot].closed or n in staying}
    for claim in jobs:
        if claim.trainer_gpu is not None and (slot := budget.slot_of(gpus, *claim.trainer_gpu)) is not None:
            running_on[trainer_key(claim.job)] = slot
    return running_on


def _requests(
    ordered: list[Claim],
    sizes: Mapping[str, int],
    placement: budget.Placement,
    previous: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """(requestedBy, lastRequested) per specialist: the claimants naming it, and when it was last requested by a
    granted claim (never earlier than its previous row's)."""
    requested_by: dict[str, list[str]] = defaultdict(list)
    requested_at: dict[str, datetime] = {}  # a granted job claim: now; a demand: when it was made
    for claim in ordered:
        names = [n for n in claim.specialists if n in sizes]
        # A job claim refreshes lastRequested only when granted: a denied one must not keep its names idle-kept.
        trainer_in = claim.trainer_bytes <= 0 or trainer_key(claim.job) in placement.admitted
        granted = claim.demand or (trainer_in and all(n in placement.admitted for n in names))
        stamp = (_parse_time(claim.created) or now) if claim.demand else now
        for name in names:
            requested_by[name].append(claim.job)
            if granted:
                requested_at[name] = max(requested_at.get(name, stamp), stamp)
    last_requested: dict[str, str | None] = {}
    for n in sizes:
        before = previous.get(n, {}).get("lastRequested")
        if n in requested_at:
            earlier = _safe_time(before)
            stamp = requested_at[n] if earlier is None else max(requested_at[n], earlier)
            last_requested[n] = now_iso(stamp)
        else:
            last_requested[n] = before
    return requested_by, last_requested


def _status_row(
    name: str,
    spec: SpecialistPoolSpec,
    gpus: list[budget.Gpu],
    sizes: Mapping[str, int],
    placement: budget.Placement,
    wanted: set[str],
    requested_by: Mapping[str, list[str]],
    last_requested: Mapping[str, str | None],
) -> dict[str, Any]:
    """The specialist's status row: its state, replicas, size, claimants, lastRequested and where it runs."""
    admitted = name in placement.admitted
    if admitted:
        state = SpecialistState.Warm if name in spec.warm else SpecialistState.Active
    elif name in wanted:
        state = SpecialistState.OverBudget
    else:
        state = SpecialistState.Cold
    row: dict[str, Any] = {
        "name": name,
        "state": state.value,
        "replicas": int(admitted),
        "residentBytes": sizes[name],
        "requestedBy": requested_by.get(name, []),
    }
    if last_requested.get(name):
        row["lastRequested"] = last_requested[name]
    if admitted:
        gpu = gpus[placement.admitted[name]]
        row["node"], row["gpu"] = gpu.node, gpu.index
    return row


def parse_pool(pool: dict[str, Any]) -> tuple[SpecialistPoolSpec | None, str]:
    """(the spec, "") or (None, why not): the spec's model and the CRD's rules on the name (an API server with an
    older CRD may have let a bad one in)."""
    return parse_object(POOL, pool)


def _capacity_source(gpus: list[budget.Gpu]) -> str:
    sources = sorted({g.source for g in gpus})
    return "none" if not sources else sources[0] if len(sources) == 1 else "mixed"


Claims = Iterable[Claim] | Callable[[], Iterable[Claim]]


async def reconcile(
    api: Api,
    namespace: str,
    name: str,
    nodes: Iterable[NodeReading] | Callable[[], Iterable[NodeReading]],
    claims: Claims,
    templates: dict[str, dict[str, Any]],
    now: datetime | None = None,
) -> PoolResult:
    """Reconcile one pool. `nodes` and `claims` may be callables (the handlers' live indices): they are read once
    the namespace's lock is held, so a reconcile that waited for it never plans a fresh spec with stale claims (a
    job whose pod appeared meanwhile would lose its specialists)."""
    return await _reconcile_locked(api, namespace, name, nodes, claims, templates, now)


async def _reconcile_locked(
    api: Api,
    namespace: str,
    name: str,
    nodes: Iterable[NodeReading] | Callable[[], Iterable[NodeReading]],
    claims: Claims,
    templates: dict[str, dict[str, Any]],
    now: datetime | None = None,
    on_locked: Callable[[], None] = lambda: None,
) -> PoolResult:
    """Take the namespace's lock, call `on_locked`, then read `nodes` and `claims` and reconcile."""
    async with _locks[namespace]:
        on_locked()
        current_nodes = list(nodes() if callable(nodes) else nodes)
        current_claims = list(claims() if callable(claims) else claims)
        return await _reconcile(
            api, namespace, name, current_nodes, current_claims, templates, now or datetime.now(UTC)
        )


# The next reconcile of each pool that has not taken the namespace lock yet (reconcile_coalesced): every caller that
# arrives before it does shares it.
_next: dict[tuple[str, str], asyncio.Task[PoolResult]] = {}


async def reconcile_coalesced(
    api: Api,
    namespace: str,
    name: str,
    nodes: Iterable[NodeReading] | Callable[[], Iterable[NodeReading]],
    claims: Claims,
    templates: dict[str, dict[str, Any]],
) -> PoolResult:
    """`reconcile`, shared by every caller that asks for the same pool before the reconcile takes the namespace lock
    (issue #31, defect 5: a pool with many waiting jobs ran one full reconcile per job and retry, all in one queue).
    A shared reconcile reads nodes and claims once it holds the lock, so each caller still gets one that started
    after it asked; a caller arriving once it holds the lock queues the next one. For callers that pass the same
    live `nodes` and `claims` (the handlers' indices): the first caller's are the ones read. Cancelling a caller
    does not cancel the shared reconcile."""
    key = (namespace, name)
    task = _next.get(key)
    if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
        task = asyncio.ensure_future(_shared(key, api, nodes, claims, templates))
        _next[key] = task
    return await asyncio.shield(task)


async def _shared(
    key: tuple[str, str],
    api: Api,
    nodes: Iterable[NodeReading] | Callable[[], Iterable[NodeReading]],
    claims: Claims,
    templates: dict[str, dict[str, Any]],
) -> PoolResult:
    task = asyncio.current_task()

    def locked() -> None:
        if _next.get(key) is task:
            del _next[key]  # from now on a caller asks for the next one: this one may have read its claims already

    return await _reconcile_locked(api, *key, nodes, claims, templates, on_locked=locked)


async def _reconcile(
    api: Api,
    namespace: str,
    name: str,
    nodes: list[NodeReading],
    claims: list[Claim],
    templates: dict[str, dict[str, Any]],
    now: datetime,
) -> PoolResult:
    pool = await api.get(POOLS, namespace, name)
    if pool is None or pool["metadata"].get("deletionTimestamp"):
        return PoolResult(found=False, message=f"SpecialistPool {name!r} not found in namespace {namespace!r}")
    generation = pool["metadata"].get("generation")
    status = pool.get("status") or {}
    spec, message = parse_pool(pool)
    if spec is None:
        await _patch_status(
            api,
            pool,
            {"observedGeneration": generation},
            [condition(ConditionType.Ready, False, ConditionReason.InvalidSpec, message)],
            now,
        )
        return PoolResult(found=True, valid=False, message=message)

    gpus, unfit = _pool_gpus(spec, nodes, templates, now)
    pools = await api.list(POOLS, namespace)
    taken = budget.taken_by_others(pools, name)
    previous = {row["name"]: row for row in status.get("specialists", [])}
    demand, demand_problems = parse_demand(
        (pool["metadata"].get("annotations") or {}).get(DEMAND_ANNOTATION),
        {s.name for s in spec.specialists},
        now,
    )
    claims = _plannable(claims, spec, templates) + demand_claims(demand, now, spec.idle_timeout_seconds)
    requests, trainer_requests = pod_requests(templates["specialist"]), pod_requests(templates["trainer"])
    room = budget.room_left(budget.node_room(nodes, gpus), pools, name, requests)
    rows, placement = plan(spec, gpus, claims, previous, now, taken, room, requests, trainer_requests)
    for line in placement_changes(previous, rows):
        log.info("SpecialistPool %s/%s: %s", namespace, name, line)

    selector = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY, builders.LABEL_POOL: name}
    listed = await _converge_children(api, pool, spec, rows, claims, templates, selector)
    await observe(api, namespace, selector, rows, listed)

    body = {
        "observedGeneration": generation,
        **_capacity_status(spec, gpus, taken, room, requests, rows, placement),
        "specialists": rows,
    }
    conditions = [
        _ready_condition(spec, gpus, rows, placement, unfit),
        _budget_condition(gpus, taken, rows, placement),
        demand_condition(demand_problems),
        freshness_condition(gpus),
    ]
    await _patch_status(api, pool, body, conditions, now)
    for reason, message in pool_warnings(status.get("conditions") or [], conditions):
        await events.post(api, pool, reason, message, events.WARNING)
    return PoolResult(
        found=True,
        admitted={r["name"] for r in rows if r["replicas"]},
        specialists={s.name for s in spec.specialists},
        models={s.name: s.model for s in spec.specialists},
        warm=list(spec.warm),
        ready={r["name"] for r in rows if r["ready"]},
        waiting={r["name"]: r.get("message") or "not ready" for r in rows if r["replicas"] and not r["ready"]},
        trainers={
            key[len(TRAINER) :]: (gpus[slot].node, gpus[slot].index)
            for key, slot in placement.admitted.items()
            if key.startswith(TRAINER)
        },
    )


def _pool_gpus(
    spec: SpecialistPoolSpec, nodes: list[NodeReading], templates: dict[str, dict[str, Any]], now: datetime
) -> tuple[list[budget.Gpu], list[str]]:
    """The GPUs of the nodes the pool's selector picks that can take its specialist pods (their tolerations, and the
    GPU-memory resource where they run on CUDA), and what the selected nodes that cannot take them say of why."""
    fallback = (
        (spec.fallback_capacity.gpus_per_node, spec.fallback_capacity.memory_bytes_per_gpu)
        if spec.fallback_capacity
        else None
    )
    specialist_template = templates["specialist"]
    tolerations = (specialist_template.get("spec") or {}).get("tolerations") or []
    gpu_pods = builders.pod_device(specialist_template) == builders.DEVICE_CUDA
    gpus = budget.pool_gpus(
        nodes, spec.node_selector, fallback, now=now, tolerations=tolerations, needs_gpu_memory=gpu_pods
    )
    unfit = budget.unfit_nodes(nodes, spec.node_selector, tolerations=tolerations, needs_gpu_memory=gpu_pods)
    return gpus, unfit


def _plannable(claims: list[Claim], spec: SpecialistPoolSpec, templates: dict[str, dict[str, Any]]) -> list[Claim]:
    """The jobs' claims the plan counts: without trainer memory where the trainer runs on the CPU, and without the
    jobs admission.py refuses (failed before they get a trainer pod: they scale nothing up meanwhile)."""
    if builders.pod_device(templates["trainer"]) != builders.DEVICE_CUDA:  # a CPU trainer takes no GPU memory
        claims = [replace(c, trainer_bytes=0) for c in claims]
    return [c for c in claims if c.running or admission.claim_admissible(c.refused, c.output, spec, templates)]


async def _converge_children(
    api: Api,
    pool: dict[str, Any],
    spec: SpecialistPoolSpec,
    rows: list[dict[str, Any]],
    claims: list[Claim],
    templates: dict[str, dict[str, Any]],
    selector: dict[str, str],
) -> list[dict[str, Any]]:
    """Bring the pool's children to the plan (`rows`): every specialist's Deployment (its replicas and pin) and
    Service, and the PodDisruptionBudgets of what is warm or held and of running trainers; a Normal event per
    scaling. Returns the Deployments as listed (for `observe`)."""
    namespace, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
    deployments = [
        builders.specialist_deployment(
            pool,
            s,
            row["replicas"],
            spec.node_selector,
            templates["specialist"],
            resident_bytes=row["residentBytes"],
            gpu=(row["node"], row["gpu"]) if "node" in row else None,
        )
        for s, row in zip(spec.specialists, rows, strict=True)
    ]
    converged = await converge(api, DEPLOYMENTS, namespace, selector, deployments)
    await events.post_scalings(api, pool, deployments, converged)
    await converge(api, SERVICES, namespace, selector, [builders.specialist_service(pool, s) for s in spec.specialists])
    # PodDisruptionBudgets of the warm and job-held specialists and running trainers (builders.specialist_pdbs);
    # best effort: a cluster whose Role lacks them yet (an operator upgraded before its RBAC) still gets its pools
    # reconciled.
    running_jobs = [c for c in claims if c.running and not c.demand]
    held = {n for c in running_jobs for n in c.specialists}
    pdbs = builders.specialist_pdbs(pool, spec, rows, held, [c.job for c in running_jobs])
    try:
        await converge(api, PDBS, namespace, selector, pdbs)
    except FAILURES as exc:
        served = not (isinstance(exc, ApiError) and exc.status == 404)  # 404: the server has no policy/v1 PDBs
        log.log(
            logging.WARNING if served else logging.INFO,
            "SpecialistPool %s/%s: PodDisruptionBudgets not converged: %s",
            namespace,
            name,
            exc if served else "the API server serves no policy/v1 poddisruptionbudgets",
        )
    return converged.listed


def _capacity_status(
    spec: SpecialistPoolSpec,
    gpus: list[budget.Gpu],
    taken: Mapping[budget.GpuKey, int],
    room: Mapping[str, budget.Room],
    requests: budget.Room,
    rows: list[dict[str, Any]],
    placement: budget.Placement,
) -> dict[str, Any]:
    """The status fields that say what the pool has and uses: spawnBudget, capacity and its source, other pools'
    bytes, gpuUsage and the counts by state."""
    capacities = budget.usable(gpus, spec.memory_reserve_per_gpu, taken)
    return {
        "spawnBudget": budget.spawn_budget(
            capacities, [r["residentBytes"] for r in rows], budget.limits_of(gpus, room, {}), requests
        ),
        "capacityBytes": sum(capacities),
        "otherPoolsBytes": sum(taken.get((g.node, g.index), 0) for g in gpus),
        "residentBytes": sum(r["residentBytes"] for r in rows if r["replicas"]),
        "gpuUsage": budget.gpu_usage(gpus, placement),
        "gpus": len(gpus),
        "capacitySource": _capacity_source(gpus),
        "warmCount": sum(r["state"] == SpecialistState.Warm for r in rows),
        "activeCount": sum(r["state"] == SpecialistState.Active for r in rows),
    }


def _ready_condition(
    spec: SpecialistPoolSpec,
    gpus: list[budget.Gpu],
    rows: list[dict[str, Any]],
    placement: budget.Placement,
    unfit: list[str],
) -> dict[str, Any]:
    """Ready: the warm set admitted and ready on some GPU; else why not (no capacity, over budget, not ready yet),
    with the nodes that can take no new pods named."""
    warm_missing = [w for w in spec.warm if w not in placement.admitted]
    warm_waiting = [r for r in rows if r["name"] in spec.warm and r["replicas"] and not r["ready"]]
    if not gpus:
        reason = ConditionReason.NoCapacity
        message = (
            "no matching node that can take the pool's pods (Ready, schedulable, taints tolerated, GPU memory "
            "advertised) reports GPU memory, and no fallbackCapacity is declared"
        )
    elif warm_missing:
        reason, message = ConditionReason.WarmSetOverBudget, f"warm specialists over budget: {', '.join(warm_missing)}"
    elif warm_waiting:
        reason = ConditionReason.WarmSetNotReady
        message = "waiting for warm specialists: " + "; ".join(
            f"{r['name']} ({r.get('message') or 'not ready'})" for r in warm_waiting
        )
    else:
        reason = ConditionReason.Reconciled
        message = f"{sum(r['ready'] for r in rows)} specialist(s) ready on {len(gpus)} GPU(s)"
    return condition(ConditionType.Ready, reason == ConditionReason.Reconciled, reason, message + unfit_note(unfit))


def _budget_condition(
    gpus: list[budget.Gpu], taken: Mapping[budget.GpuKey, int], rows: list[dict[str, Any]], placement: budget.Placement
) -> dict[str, Any]:
    """BudgetExceeded: the specialists and trainers wanted but not admitted, and what other pools hold there."""
    over = [r["name"] for r in rows if r["state"] == SpecialistState.OverBudget]
    over += [f"the trainer of {k[len(TRAINER) :]}" for k in placement.rejected if k.startswith(TRAINER)]
    other_pools = sum(taken.get((g.node, g.index), 0) for g in gpus)
    return condition(
        ConditionType.BudgetExceeded,
        bool(over),
        ConditionReason.OverBudget if over else ConditionReason.WithinBudget,
        (f"not admitted: {', '.join(over)}" if over else "")
        + (f" (other pools hold {other_pools / budget.MIB:.0f} MiB on these GPUs)" if over and other_pools else ""),
    )


def _unfit(cond: Mapping[str, Any]) -> bool:
    """Whether a pool condition says what the pool wants does not fit: over budget, or no capacity (a warm set still
    starting, Ready False WarmSetNotReady, is normal at every pool's creation and is not one)."""
    if cond["type"] == ConditionType.BudgetExceeded:
        return bool(cond["status"] == "True")
    unfit = {ConditionReason.WarmSetOverBudget, ConditionReason.NoCapacity}
    return cond["type"] == ConditionType.Ready and cond["status"] == "False" and cond["reason"] in unfit


def pool_warnings(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(reason, message) of a Warning event for each of `after`'s conditions that newly says the pool's wants do not
    fit (over budget, no capacity): one per transition (`before`: the status's conditions), not per reconcile."""
    return newly(before, after, _unfit)


def placement_changes(previous: Mapping[str, Mapping[str, Any]], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per specialist whose placement a plan changed (placed, moved, scaled to zero, over budget), from the
    status rows before (`previous`, by name) and after: the log says what the operator decided and why."""
    out = []
    for row in rows:
        before = previous.get(row["name"]) or {}
        where = f"{row['node']} GPU {row['gpu']}" if row.get("replicas") and "node" in row else None
        was = f"{before['node']} GPU {before['gpu']}" if before.get("replicas") and "node" in before else None
        if where == was and row["state"] == before.get("state"):
            continue
        if where and was:
            out.append(f"{row['name']} moved from {was} to {where} ({row['state']})")
        elif where:
            out.append(f"{row['name']} placed on {where} ({row['state']})")
        elif was:
            out.append(f"{row['name']} scaled to zero from {was} ({row['state']})")
        elif row["state"] != before.get("state"):
            out.append(f"{row['name']} {before.get('state', 'new')} -> {row['state']}")
    return out


async def observe(
    api: Api,
    namespace: str,
    selector: dict[str, str],
    rows: list[dict[str, Any]],
    deployments: Iterable[dict[str, Any]],
) -> None:
    """Set each row's `ready` from what exists (its Deployment's readyReplicas, as `converge` listed them), and for a
    scaled-up specialist that is not ready, `message` from its pod (the scheduler's reason when it cannot be placed,
    e.g. another pool's pods hold the node's GPU memory)."""
    ready = {
        (d["metadata"].get("labels") or {}).get(builders.LABEL_SPECIALIST): int(
            (d.get("status") or {}).get("readyReplicas") or 0
        )
        for d in deployments
    }
    waiting = [r for r in rows if r["replicas"] and ready.get(r["name"], 0) < r["replicas"]]
    pods = await api.list(PODS, namespace, selector) if waiting else []
    for row in rows:
        row["ready"] = bool(row["replicas"]) and ready.get(row["name"], 0) >= row["replicas"]
    for row in waiting:
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(builders.LABEL_SPECIALIST) == row["name"]]
        row["message"] = pod_problem(mine[0]) if mine else "no pod yet"


def pod_problem(pod: dict[str, Any]) -> str:
    """Why a specialist's pod is not ready, in one line: the scheduler's message if it is not placed."""
    return unschedulable(pod) or f"pod {(pod.get('status') or {}).get('phase', 'Pending')}"


def unschedulable(pod: dict[str, Any]) -> str:
    """The scheduler's reason and message when it could not place `pod` (PodScheduled False), else ''."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".strip()[:300]
    return ""


async def _patch_status(
    api: Api, pool: dict[str, Any], body: dict[str, Any], conditions: list[dict[str, Any]], now: datetime
) -> None:
    """Set `body`'s fields and merge `conditions` into the pool's status, optimistically (status_write)."""
    generation = pool["metadata"].get("generation")

    def update(current: dict[str, Any]) -> dict[str, Any] | None:
        status = current.get("status") or {}
        merged = merge_conditions(status.get("conditions", []), conditions, now=now_iso(now), generation=generation)
        if {**status, **body, "conditions": merged} == status:
            return None  # unchanged: no write, no watch event
        return {**body, "conditions": merged}

    await status_write.write(api, POOLS, pool, update)
