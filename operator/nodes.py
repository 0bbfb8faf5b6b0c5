"""What the planner knows of a Node: a small summary (`NodeReading`) of the Node object, kept in the handlers' node
index, and whether the node can take a pool's pods (`fitness`): the scheduler's own filters, done before planning,
so a plan never pins a specialist where it cannot run (issue #31, defect 4).

A node is `OPEN` (new pods may go there), `CLOSED` (cordoned, or a NoSchedule taint the pods do not tolerate: what
runs there keeps running, nothing new is placed) or `GONE` (NotReady, an untolerated NoExecute taint, or none of the
GPU-memory resource that a GPU pod requests: nothing runs there). Also Kubernetes resource quantities (`quantity`),
for CPU and memory requests and allocatable amounts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from swarm.operator.models import PREFIX

GPU_MEMORY_ANNOTATION = f"{PREFIX}gpu-memory"  # the node agent's reading (JSON), parsed by budget.py
# The node agent advertises its node's GPU memory (sum over GPUs, MiB) as this extended resource; every GPU pod of
# the swarm requests its resident MiB of it, so the scheduler refuses overcommit (builders.request_gpu_memory).
GPU_MEMORY_RESOURCE = f"{PREFIX}gpu-memory-mib"
Taint = tuple[str, str, str]  # key, value, effect (NoSchedule or NoExecute: PreferNoSchedule binds nothing)
_BINDING_EFFECTS = {"NoSchedule", "NoExecute"}
_BINARY = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_SUFFIXES: dict[str, Decimal] = {
    **{suffix: Decimal(2) ** (10 * i) for i, suffix in enumerate(_BINARY, 1)},
    **{suffix: Decimal(10) ** power for suffix, power in _DECIMAL.items()},
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class Fitness(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    GONE = "gone"


@dataclass(frozen=True)
class NodeReading:
    """A Node as the planner sees it; `cpu` (millicores), `memory` (bytes) and `gpu_memory_mib` are allocatable
    amounts, None where the node does not report them."""

    name: str
    labels: Mapping[str, str]
    gpu_annotation: str | None = None
    ready: bool = True
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    cpu: int | None = None
    memory: int | None = None
    gpu_memory_mib: int | None = None


def quantity(value: object) -> Decimal | None:
    """A Kubernetes resource quantity (`500m`, `4Gi`, `1e3`, 2) as a number; None when it is not one."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]
    except InvalidOperation:
        return None


def millis(value: object) -> int | None:
    """A CPU quantity in millicores (rounded up, as the API server does)."""
    amount = quantity(value)
    return None if amount is None else math.ceil(amount * 1000)


def whole(value: object) -> int | None:
    """A quantity in whole units (bytes of memory, MiB of GPU memory), rounded up."""
    amount = quantity(value)
    return None if amount is None else math.ceil(amount)


def reading(node: Mapping[str, Any]) -> NodeReading:
    """The summary of a Node object (the node index's entry)."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [] if c)
    taints = tuple(
        (str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect")))
        for t in spec.get("taints") or []
        if t and t.get("effect") in _BINDING_EFFECTS
    )
    cpu, memory, gpu = (allocatable.get(k) for k in ("cpu", "memory", GPU_MEMORY_RESOURCE))
    return NodeReading(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        gpu_annotation=(meta.get("annotations") or {}).get(GPU_MEMORY_ANNOTATION),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
        taints=taints,
        cpu=None if cpu is None else millis(cpu),
        memory=None if memory is None else whole(memory),
        gpu_memory_mib=None if gpu is None else whole(gpu),
    )


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Taint) -> bool:
    """Whether any of a pod's tolerations tolerates `taint` (the scheduler's rule: an empty key with Exists matches
    every key, an empty effect every effect)."""
    key, value, effect = taint
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != effect:
            continue
        operator = toleration.get("operator") or "Equal"
        if operator == "Exists" and (not toleration.get("key") or toleration["key"] == key):
            return True
        if operator == "Equal" and toleration.get("key") == key and (toleration.get("value") or "") == value:
            return True
    return False


def fitness(node: NodeReading, tolerations: Sequence[Mapping[str, Any]], needs_gpu_memory: bool) -> tuple[Fitness, str]:
    """Whether the node can take pods with these `tolerations` (and, `needs_gpu_memory`: a GPU pod's request of
    the GPU-memory resource), and why not."""
    untolerated = [t for t in node.taints if not tolerates(tolerations, t)]
    if not node.ready:
        return Fitness.GONE, "NotReady"
    if needs_gpu_memory and not node.gpu_memory_mib:
        return Fitness.GONE, f"no {GPU_MEMORY_RESOURCE} allocatable"
    if evicting := [t for t in untolerated if t[2] == "NoExecute"]:
        return Fitness.GONE, f"taint {_taint(evicting[0])}"
    if node.unschedulable:
        return Fitness.CLOSED, "cordoned"
    if untolerated:
        return Fitness.CLOSED, f"taint {_taint(untolerated[0])}"
    return Fitness.OPEN, ""


def _taint(taint: Taint) -> str:
    key, value, effect = taint
    return f"{key}={value}:{effect}" if value else f"{key}:{effect}"


def pod_requests(template: Mapping[str, Any]) -> tuple[int, int]:
    """(CPU millicores, memory bytes) a pod of this template requests, summed over its containers; a container's
    limit stands for a request it does not make (the API server's default)."""
    cpu = memory = 0
    for container in (template.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        cpu += millis(wanted.get("cpu", 0)) or 0
        memory += whole(wanted.get("memory", 0)) or 0
    return cpu, memory
