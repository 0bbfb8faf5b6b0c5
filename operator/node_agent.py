"""The NVML node agent (`swarm node-agent`, a DaemonSet on GPU nodes): reads free/total memory per GPU and
publishes it as the Node annotation `swarm.ai/gpu-memory`, periodically, and advertises the node's GPU memory (sum
of the GPUs' totals, MiB) as the extended resource `swarm.ai/gpu-memory-mib` in the node's status, which the swarm's
GPU pods request so that the scheduler refuses to overcommit it (budget.GPU_MEMORY_RESOURCE).

Annotation value (JSON): {"source": "nvml"|"declared"|"unavailable", "updated": ISO-8601, "gpus": [{"index",
"name", "uuid", "total", "free", "used"}], "reason": str (when NVML failed)}. Without NVML (no driver, no GPU)
the agent logs why once, and publishes the declared capacity (--declared-gpus/--declared-memory-bytes) or an
empty GPU list, so the operator falls back to the pool's fallbackCapacity. It never exits on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from swarm.operator.budget import MIB
from swarm.operator.nodes import GPU_MEMORY_ANNOTATION, GPU_MEMORY_RESOURCE

log = logging.getLogger("swarm.node-agent")


class NvmlUnavailable(RuntimeError):
    pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_nvml(nvml: ModuleType | None = None) -> list[dict[str, Any]]:
    """Memory of every GPU via NVML; raises NvmlUnavailable with the reason when NVML cannot be used."""
    if nvml is None:
        try:
            import pynvml
        except ImportError as exc:  # nvidia-ml-py not installed
            raise NvmlUnavailable(f"pynvml not importable: {exc}") from exc
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"{type(exc).__name__}: {exc}") from exc
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": index,
                    "name": _text(nvml.nvmlDeviceGetName(handle)),
                    "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
                    "total": int(memory.total),
                    "free": int(memory.free),
                    "used": int(memory.used),
                }
            )
        return gpus
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"{type(exc).__name__}: {exc}") from exc
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def payload(
    gpus: list[dict[str, Any]] | None,
    *,
    reason: str | None = None,
    declared_gpus: int = 0,
    declared_memory: int = 0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The annotation document: NVML readings, or else the declared capacity, or else no GPUs with the reason."""
    doc: dict[str, Any] = {"updated": (now or datetime.now(UTC)).isoformat()}
    if gpus is not None:
        return {**doc, "source": "nvml", "gpus": gpus}
    if declared_gpus and declared_memory:
        gpus = [
            {"index": i, "name": "declared", "total": declared_memory, "free": declared_memory, "used": 0}
            for i in range(declared_gpus)
        ]
        return {**doc, "source": "declared", "gpus": gpus, "reason": reason}
    return {**doc, "source": "unavailable", "gpus": [], "reason": reason}


def collect(
    nvml: ModuleType | None = None,
    *,
    declared_gpus: int = 0,
    declared_memory: int = 0,
    warned: list[str] | None = None,
) -> dict[str, Any]:
    """One reading; logs the NVML failure reason once per distinct reason (passed in `warned`)."""
    try:
        return payload(read_nvml(nvml))
    except NvmlUnavailable as exc:
        reason = str(exc)
        if warned is None or reason not in warned:
            fallback = (
                f"declaring {declared_gpus} GPU(s) x {declared_memory} bytes"
                if declared_gpus and declared_memory
                else "publishing no GPUs (pools use their fallbackCapacity)"
            )
            log.warning("NVML unavailable (%s); %s", reason, fallback)
            if warned is not None:
                warned.append(reason)
        return payload(None, reason=reason, declared_gpus=declared_gpus, declared_memory=declared_memory)


def capacity_patch(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The node-status patch advertising the reading's GPU memory (MiB, floored); None without GPUs (an unavailable
    reading keeps the last advertised capacity: pods already placed keep their accounting)."""
    if not doc.get("gpus"):
        return None
    amount = str(sum(int(g["total"]) for g in doc["gpus"]) // MIB)
    return {"status": {"capacity": {GPU_MEMORY_RESOURCE: amount}, "allocatable": {GPU_MEMORY_RESOURCE: amount}}}


async def run(
    node: str,
    *,
    interval: float,
    declared_gpus: int = 0,
    declared_memory: int = 0,
    once: bool = False,
    dry_run: bool = False,
    nvml: ModuleType | None = None,
) -> None:
    from swarm.operator.kube import NODES, Api, load_connection

    warned: list[str] = []
    api = None if dry_run else Api(load_connection())
    try:
        while True:
            doc = collect(nvml, declared_gpus=declared_gpus, declared_memory=declared_memory, warned=warned)
            text = json.dumps(doc, sort_keys=True)
            if api is None:
                print(text, flush=True)
            else:
                try:
                    await api.patch(NODES, None, node, {"metadata": {"annotations": {GPU_MEMORY_ANNOTATION: text}}})
                    capacity = capacity_patch(doc)
                    if capacity is not None:
                        await api.patch(NODES, None, node, capacity, status=True)
                    log.info("published %s GPU(s) for node %s (source %s)", len(doc["gpus"]), node, doc["source"])
                except Exception as exc:  # the agent must outlive API hiccups
                    log.error("could not annotate node %s: %s", node, exc)
            if once:
                return
            await asyncio.sleep(interval)
    finally:
        if api is not None:
            await api.close()
