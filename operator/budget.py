"""GPU memory budget: resident bytes of a specialist, GPU capacity from Node annotations, and placement.

Pure functions only; the handlers feed them Node readings (nodes.py), pool specs and pool statuses. The budget counts a
GPU's *total* memory minus the pool's reserve and minus what other pools' admitted specialists hold on it (each
pool publishes its placement per GPU in status.gpuUsage): the agent's `free` figure already excludes the
specialists we placed there, so using it would count them twice (it is published for observability).

Only GPUs of nodes that can take the pool's pods count (nodes.fitness): a cordoned node's GPUs, or one tainted
NoSchedule, are `closed` (they keep only what a running job holds there), a NotReady node or one without the
GPU-memory resource has none. A placement also keeps within each node's allocatable CPU and memory (`Limits`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

# Defined in nodes.py (a Node's summary), imported from here as they long were.
from swarm.operator.nodes import GPU_MEMORY_ANNOTATION as GPU_MEMORY_ANNOTATION
from swarm.operator.nodes import GPU_MEMORY_RESOURCE as GPU_MEMORY_RESOURCE
from swarm.operator.nodes import Fitness, NodeReading, fitness

MIB = 1024**2
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}  # one per choices.DTYPE_NAMES (a test checks)
# Every specialist is its own process: CUDA context + cuBLAS workspace + allocator slack on an RTX 4090.
RUNTIME_OVERHEAD_BYTES = 384 * MIB
MIN_ACTIVATION_BYTES = 64 * MIB
STALE_AFTER_SECONDS = 600.0


def mib(nbytes: int) -> int:
    """Whole MiB covering `nbytes` (what a pod requests of GPU_MEMORY_RESOURCE)."""
    return -(-int(nbytes) // MIB)


def weight_bytes(params: int, dtype: str) -> int:
    return params * DTYPE_BYTES[dtype]


def activation_estimate(params: int, dtype: str) -> int:
    """Recurrent states (B,H,K,V per layer) and transient activations: a quarter of the weights, at least 64 MiB."""
    return max(MIN_ACTIVATION_BYTES, weight_bytes(params, dtype) // 4)


def resident_bytes(
    *, dtype: str, params: int | None = None, resident: int | None = None, activation: int | None = None
) -> int:
    """Bytes a specialist occupies on its GPU: a measured figure if given, else weights + activations + runtime."""
    if resident is not None:
        return resident
    if params is None:
        raise ValueError("need params or a measured resident size")
    act = activation if activation is not None else activation_estimate(params, dtype)
    return weight_bytes(params, dtype) + act + RUNTIME_OVERHEAD_BYTES


@dataclass(frozen=True)
class Gpu:
    node: str
    index: int
    total: int
    free: int
    source: str  # "nvml" | "declared" | "fallback"
    stale: bool = False  # the agent's reading is older than STALE_AFTER_SECONDS: kept, and said so
    closed: bool = False  # its node takes no new pods (cordoned, tainted): only what runs there may stay


def parse_gpu_annotation(
    node: str, raw: str | None, *, now: datetime | None = None, stale_after: float = STALE_AFTER_SECONDS
) -> list[Gpu] | None:
    """GPUs from the agent's annotation; None when absent, malformed (any shape: it is written by hand or by an
    older agent, so it never raises), or reporting no GPUs. A reading older than `stale_after` is still used, its
    GPUs marked `stale`: an agent that went quiet must not evict the specialists placed on its node (the pool says
    so in its CapacityFresh condition)."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("gpus", []), list):
            return None
        gpus = [_gpu(node, g, str(doc.get("source", "nvml"))) for g in doc.get("gpus", [])]
        updated = doc.get("updated")
        if updated is not None and now is not None:
            age = (now - datetime.fromisoformat(updated)).total_seconds()
            if age > stale_after:
                gpus = [replace(g, stale=True) for g in gpus]
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None
    return gpus or None


def _gpu(node: str, entry: Any, source: str) -> Gpu:
    """One GPU entry; a ValueError when it is not an object of non-negative integers (bool and float excluded)."""
    if not isinstance(entry, dict):
        raise ValueError(f"GPU entry {entry!r} is not an object")
    values = [entry["index"], entry["total"], entry.get("free", entry["total"])]
    if not all(type(v) is int and v >= 0 for v in values):
        raise ValueError(f"GPU entry {entry!r} has a non-integer or negative field")
    index, total, free = values
    return Gpu(node, index, total, free, source)


def node_matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pool_gpus(
    nodes: Iterable[NodeReading],
    selector: Mapping[str, str],
    fallback: tuple[int, int] | None,
    *,
    now: datetime | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    needs_gpu_memory: bool = False,
) -> list[Gpu]:
    """GPUs of the nodes matching `selector` that can take pods with these `tolerations` (`needs_gpu_memory`: a
    GPU pod's request of GPU_MEMORY_RESOURCE), those of closed nodes marked `closed`; nodes without a usable reading
    get `fallback` (gpus, bytes each)."""
    gpus: list[Gpu] = []
    for node in sorted(nodes, key=lambda n: n.name):
        if not node_matches(node.labels, selector):
            continue
        fit, _ = fitness(node, tolerations, needs_gpu_memory)
        if fit == Fitness.GONE:
            continue
        reported = parse_gpu_annotation(node.name, node.gpu_annotation, now=now or datetime.now(UTC))
        if not reported and fallback is not None:
            count, total = fallback
            reported = [Gpu(node.name, i, total, total, "fallback") for i in range(count)]
        gpus.extend(replace(g, closed=fit == Fitness.CLOSED) for g in reported or [])
    return gpus


def unfit_nodes(
    nodes: Iterable[NodeReading],
    selector: Mapping[str, str],
    *,
    tolerations: Sequence[Mapping[str, Any]] = (),
    needs_gpu_memory: bool = False,
) -> list[str]:
    """`name (why)` of each node matching `selector` that takes no new pods (closed or gone), by name."""
    found = []
    for node in sorted(nodes, key=lambda n: n.name):
        fit, why = fitness(node, tolerations, needs_gpu_memory)
        if node_matches(node.labels, selector) and fit != Fitness.OPEN:
            found.append(f"{node.name} ({why})")
    return found


def planning_view(node: NodeReading) -> tuple[object, ...]:
    """What a plan reads of a node, for telling whether an event on it can change one: everything but the agent's
    reading's timestamp and free bytes (a plan uses GPU totals only; those two change at every agent report)."""
    gpus = parse_gpu_annotation(node.name, node.gpu_annotation) or []
    return (
        sorted(node.labels.items()),
        node.ready,
        node.unschedulable,
        node.taints,
        node.cpu,
        node.memory,
        node.gpu_memory_mib,
        [(g.index, g.total, g.source) for g in gpus],
    )


Room = tuple[int, int]  # CPU millicores, memory bytes
UNBOUNDED = 2**62  # a node that does not report an allocatable amount is not bounded by it


def node_room(nodes: Iterable[NodeReading], gpus: Sequence[Gpu]) -> dict[str, Room]:
    """Allocatable (CPU, memory) of the nodes that have any of `gpus`."""
    names = {g.node for g in gpus}
    return {
        n.name: (UNBOUNDED if n.cpu is None else n.cpu, UNBOUNDED if n.memory is None else n.memory)
        for n in nodes
        if n.name in names
    }


@dataclass(frozen=True)
class Limits:
    """What bounds a placement besides GPU bytes: the node of each slot (`node_of`), the CPU and memory left per
    node (`room`; a node not in it is unbounded), each name's CPU and memory request (`requests`; none: nothing),
    and the `closed` slots, which take only a name whose preferred slot it is (it runs there)."""

    node_of: Sequence[str] = ()
    room: Mapping[str, Room] = field(default_factory=dict)
    requests: Mapping[str, Room] = field(default_factory=dict)
    closed: frozenset[int] = frozenset()


def limits_of(gpus: Sequence[Gpu], room: Mapping[str, Room], requests: Mapping[str, Room]) -> Limits:
    return Limits(
        node_of=[g.node for g in gpus],
        room=room,
        requests=requests,
        closed=frozenset(i for i, g in enumerate(gpus) if g.closed),
    )


GpuKey = tuple[str, int]  # node name, GPU index


def usable(
    gpus: Sequence[Gpu], reserve: int, taken: Mapping[GpuKey, int] | None = None, *, closed_too: bool = False
) -> list[int]:
    """Bytes a pool may place per GPU: total minus its reserve minus what other pools hold there (`taken`); none on
    a closed GPU unless `closed_too` (for what already runs there)."""
    taken = taken or {}
    return [
        0 if g.closed and not closed_too else max(0, g.total - reserve - taken.get((g.node, g.index), 0)) for g in gpus
    ]


@dataclass(frozen=True)
class Placement:
    admitted: dict[str, int]  # specialist -> GPU slot index
    rejected: list[str]
    used: list[int]  # bytes placed per GPU slot
    room: dict[str, Room] = field(default_factory=dict)  # CPU and memory left per node (those in Limits.room)


def place(
    capacities: Sequence[int],
    demands: Sequence[tuple[str, int]],
    preferred: Mapping[str, int] | None = None,
    limits: Limits | None = None,
) -> Placement:
    """First-fit in priority order: earlier demands are never displaced by later ones."""
    return place_groups(capacities, [[demand] for demand in demands], preferred, limits=limits)


def place_groups(
    capacities: Sequence[int],
    groups: Sequence[Sequence[tuple[str, int]]],
    preferred: Mapping[str, int] | None = None,
    already: Mapping[str, int] | None = None,
    limits: Limits | None = None,
) -> Placement:
    """First-fit in priority order, a group at a time: a group is admitted whole or not at all (a job needs all of
    its specialists), never displacing an earlier one; a name an earlier group already placed, or one in `already`
    (placed by an earlier call), costs nothing. A demand tries its `preferred` slot first (where it runs now), so a
    running specialist is not moved to another GPU (a restart) because the plan around it changed. A slot takes a
    demand only when its node also has room for the name's CPU and memory request (`limits`), and a closed slot
    only the name that prefers it."""
    limits = limits or Limits()
    free = list(capacities)
    room = dict(limits.room)
    admitted: dict[str, int] = dict(already or {})
    rejected: list[str] = []
    preferred = preferred or {}
    for group in groups:
        trial, trial_room, placed = list(free), dict(room), {}
        for name, size in group:
            if name in admitted or name in placed:
                continue
            slots: Sequence[int] = range(len(trial))
            first = preferred.get(name)
            if first is not None and 0 <= first < len(trial):
                slots = [first, *(i for i in slots if i != first)]
            request = limits.requests.get(name, (0, 0))
            slot = next((i for i in slots if _fits(limits, trial, trial_room, i, size, request, first)), None)
            if slot is None:
                rejected += [n for n, _ in group if n not in admitted and n not in rejected]
                break
            trial[slot] -= size
            if slot < len(limits.node_of) and (node := limits.node_of[slot]) in trial_room:
                trial_room[node] = (trial_room[node][0] - request[0], trial_room[node][1] - request[1])
            placed[name] = slot
        else:
            free, room = trial, trial_room
            admitted.update(placed)
    rejected = [n for n in rejected if n not in admitted]
    admitted = {n: slot for n, slot in admitted.items() if n not in (already or {})}
    return Placement(admitted, rejected, [c - f for c, f in zip(capacities, free, strict=True)], room)


def _fits(
    limits: Limits,
    free: Sequence[int],
    room: Mapping[str, Room],
    slot: int,
    size: int,
    request: Room,
    first: int | None,
) -> bool:
    """Whether `slot` takes a demand of `size` bytes and `request` (CPU, memory) whose preferred slot is `first`."""
    if free[slot] < size or (slot in limits.closed and slot != first):
        return False
    left = room.get(limits.node_of[slot]) if slot < len(limits.node_of) else None
    return left is None or (left[0] >= request[0] and left[1] >= request[1])


def place_protected(
    full: Sequence[int],
    usable_: Sequence[int],
    protected: Sequence[Sequence[tuple[str, int]]],
    groups: Sequence[Sequence[tuple[str, int]]],
    preferred: Mapping[str, int] | None = None,
    limits: Limits | None = None,
) -> Placement:
    """`protected` groups first against `full` (what other pools leave, the reserve not subtracted), then `groups`
    against what `usable_` (the reserve subtracted) leaves of it. A running job's specialists and trainer are
    protected: they are resident already, so a larger reserve limits what is admitted next, never evicts them.
    The CPU and memory the protected groups take are not there for the others (`limits`)."""
    limits = limits or Limits()
    first = place_groups(full, protected, preferred, limits=limits)
    left = [max(0, u - used) for u, used in zip(usable_, first.used, strict=True)]
    rest = place_groups(left, groups, preferred, already=first.admitted, limits=replace(limits, room=first.room))
    admitted = {**first.admitted, **rest.admitted}
    rejected = [n for n in dict.fromkeys([*first.rejected, *rest.rejected]) if n not in admitted]
    used = [a + b for a, b in zip(first.used, rest.used, strict=True)]
    return Placement(admitted, rejected, used, rest.room)


def spawn_budget(
    capacities: Sequence[int], sizes: Iterable[int], limits: Limits | None = None, request: Room = (0, 0)
) -> int:
    """How many of these specialists, each requesting `request` (CPU, memory), fit at once (first-fit, smallest
    first: a close bound on the maximum); `limits`: the nodes' room, closed slots (its requests are replaced)."""
    ordered = sorted(sizes)
    names = [str(i) for i in range(len(ordered))]
    limits = replace(limits or Limits(), requests=dict.fromkeys(names, request))
    return len(place(capacities, list(zip(names, ordered, strict=True)), limits=limits).admitted)


def slot_of(gpus: Sequence[Gpu], node: object, index: object) -> int | None:
    """The slot (position in `gpus`) of the GPU `index` of `node`, as a status row names it; None if gone."""
    return next((i for i, g in enumerate(gpus) if g.node == node and g.index == index), None)


def gpu_usage(gpus: Sequence[Gpu], placement: Placement) -> list[dict[str, int | str]]:
    """A placement's bytes per GPU it uses, as published in the pool's status.gpuUsage."""
    return [
        {"node": g.node, "index": g.index, "bytes": used} for g, used in zip(gpus, placement.used, strict=True) if used
    ]


def room_left(
    room: Mapping[str, Room], pools: Iterable[Mapping[str, Any]], name: str, request: Room
) -> dict[str, Room]:
    """`room` less what the admitted specialists of the pools (objects) other than `name` request on each node
    (each `request`: every pool of a namespace uses the operator's one specialist template). Never below zero.
    Trainer pods of other pools' jobs are not counted (their pools' statuses do not list them)."""
    left = dict(room)
    for pool in pools:
        if pool.get("metadata", {}).get("name") == name:
            continue
        for row in (pool.get("status") or {}).get("specialists") or []:
            node = row.get("node") if isinstance(row, Mapping) else None
            if node in left and row.get("replicas"):
                cpu, memory = left[node]
                left[node] = (max(0, cpu - request[0]), max(0, memory - request[1]))
    return left


def taken_by_others(pools: Iterable[Mapping[str, Any]], name: str) -> dict[GpuKey, int]:
    """Bytes per GPU held by the admitted specialists of the pools (objects) other than `name`."""
    taken: dict[GpuKey, int] = {}
    for pool in pools:
        if pool.get("metadata", {}).get("name") == name:
            continue
        for entry in (pool.get("status") or {}).get("gpuUsage") or []:
            try:
                key = (str(entry["node"]), int(entry["index"]))
                taken[key] = taken.get(key, 0) + max(0, int(entry["bytes"]))
            except (KeyError, TypeError, ValueError):
                continue  # status is ours, but a hand-edited one must not stop every pool's reconcile
    return taken
