"""Prometheus metrics of the operator and its HTTP endpoints (aiohttp, in the operator's event loop).

Metrics (prometheus_client's default registry, so the process_* and python_* collectors come along):
reconciles by kind and result (success, retry: a job left Pending for later, error), errors by kind and exception,
reconcile durations, the leader gauge, and per SpecialistPool the figures of its status as pool.py writes it
(capacity, resident bytes, bytes per GPU its admitted specialists use, specialists per state). The pool figures
come from the pools' watch events (`observe_pool`), so every writer of the status is covered and a deleted pool's
series go away.

Endpoints on `--metrics-port`: /metrics; /healthz (liveness: answered by the event loop, so a blocked or dead loop
fails it); /readyz (readiness: 200 only while this replica holds the Lease and kopf has started, so a standby
replica is alive but not ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

RECONCILES = Counter("swarm_operator_reconciles", "Reconciles by kind and result.", ["kind", "result"])
ERRORS = Counter("swarm_operator_reconcile_errors", "Failed reconciles by kind and exception.", ["kind", "error"])
DURATION = Histogram(
    "swarm_operator_reconcile_duration_seconds",
    "Reconcile duration by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LEADER = Gauge("swarm_operator_leader", "1 while this replica holds the leader Lease (runs the reconcilers).")
POOL_LABELS = ["namespace", "pool"]
POOL_CAPACITY = Gauge("swarm_pool_capacity_bytes", "GPU memory the pool may use (status.capacityBytes).", POOL_LABELS)
POOL_RESIDENT = Gauge(
    "swarm_pool_resident_bytes", "GPU memory of the pool's running specialists (status.residentBytes).", POOL_LABELS
)
POOL_GPU_USED = Gauge(
    "swarm_pool_gpu_used_bytes",
    "GPU memory budget the pool's admitted specialists and jobs' trainers use per GPU (status.gpuUsage).",
    [*POOL_LABELS, "node", "gpu"],
)
POOL_SPECIALISTS = Gauge(
    "swarm_pool_specialists",
    "Specialists of the pool per state (warm, active, cold, overbudget).",
    [*POOL_LABELS, "state"],
)
STATES = ("warm", "active", "cold", "overbudget")

_gpu_series: dict[tuple[str, str], set[tuple[str, str]]] = {}  # pool -> the (node, gpu) series it has


@contextlib.asynccontextmanager
async def reconciling(kind: str) -> AsyncIterator[None]:
    """Count and time one reconcile (a context manager, or a decorator of an async handler). kopf.TemporaryError
    counts as result "retry" (a job waiting for its pool or budget), other exceptions as "error"."""
    started = time.perf_counter()
    try:
        yield
    except kopf.TemporaryError:
        RECONCILES.labels(kind, "retry").inc()
        raise
    except Exception as exc:
        RECONCILES.labels(kind, "error").inc()
        ERRORS.labels(kind, type(exc).__name__).inc()
        raise
    else:
        RECONCILES.labels(kind, "success").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - started)


def observe_pool(namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
    """Set the pool's gauges from its status; `None` (the pool is gone) removes its series."""
    key = (namespace, name)
    gpus = {
        (str(u.get("node", "")), str(u.get("index", ""))): u.get("bytes", 0)
        for u in (status or {}).get("gpuUsage") or []
    }
    for node, gpu in _gpu_series.pop(key, set()) - set(gpus):
        POOL_GPU_USED.remove(namespace, name, node, gpu)
    if status is None:
        for gauge in (POOL_CAPACITY, POOL_RESIDENT):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for state in STATES:
            with contextlib.suppress(KeyError):
                POOL_SPECIALISTS.remove(namespace, name, state)
        return
    POOL_CAPACITY.labels(namespace, name).set(status.get("capacityBytes") or 0)
    POOL_RESIDENT.labels(namespace, name).set(status.get("residentBytes") or 0)
    for (node, gpu), used in gpus.items():
        POOL_GPU_USED.labels(namespace, name, node, gpu).set(used or 0)
    _gpu_series[key] = set(gpus)
    states = [str(row.get("state", "")).lower() for row in status.get("specialists") or []]
    for state in STATES:
        POOL_SPECIALISTS.labels(namespace, name, state).set(states.count(state))


class QuietSuccess(logging.Filter):
    """Drops kopf's "Handler '<id>' succeeded." (and "Timer ...") lines of handlers that run on every watch event or
    resync (pool-metrics, pool-children, the trainer pod events, the resync timers)."""

    def __init__(self, *handler_ids: str) -> None:
        super().__init__()
        self.prefixes = tuple(f"{kind} {i!r} succeeded" for i in handler_ids for kind in ("Handler", "Timer"))

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


class QuietWaiting(logging.Filter):
    """Logs kopf's "<handler> failed temporarily: ..." of the given handlers at INFO, not ERROR: those handlers
    raise kopf.TemporaryError only for a normal wait (a job Pending for its pool, budget or specialists), which the
    job says in its conditions and a Warning event. At INFO kopf does not post it as an Error event either."""

    def __init__(self, *handler_ids: str) -> None:
        super().__init__()
        kinds = ("Handler", "Timer")
        self.prefixes = tuple(f"{kind} {i!r} failed temporarily: " for i in handler_ids for kind in kinds)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage().startswith(self.prefixes):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


@dataclass
class Health:
    """What the probes report: leadership (set by the Elector) and kopf's start (its ready flag)."""

    leader: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def set_leader(self, leading: bool) -> None:
        self.leader = leading
        LEADER.set(int(leading))

    @property
    def ready(self) -> bool:
        return self.leader and self.started.is_set()


def app(health: Health) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if health.ready:
            return web.Response(text="ready\n")
        why = "kopf is starting" if health.leader else "standby: another replica holds the leader lease"
        return web.Response(status=503, text=f"not ready: {why}\n")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    return application


async def serve(port: int, health: Health, host: str = "0.0.0.0") -> web.AppRunner:
    """Start the endpoints on host:port; the caller cleans the returned runner up."""
    runner = web.AppRunner(app(health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
