"""The periodic resync of every SpecialistPool and SwarmJob, as one background task of the operator instead of a
kopf timer per object: a kopf timer makes kopf put a finalizer on each object (to stop the timer on deletion), so a
pool or job could not be deleted while the operator was down. Without timers they carry no finalizer; their
children go by owner references and the garbage collector, and a deleted job's claim is released by a watch event.

Each pass reconciles every pool, then every job (the resync drives idle timeouts, expired demand, node capacity
changes, backoff, activeDeadlineSeconds, ttlSecondsAfterFinished and what running jobs hold), at most
`concurrency` at a time; one failure is logged and never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from swarm.operator.kube import ApiError

log = logging.getLogger(__name__)
Reconcile = Callable[[], Awaitable[object]]


def namespace_terminating(exc: BaseException) -> bool:
    """Whether `exc` is the API server refusing new objects in a namespace being deleted (a 403, not an error of
    the operator: whatever it reconciled is going with the namespace)."""
    return isinstance(exc, ApiError) and exc.status == 403 and "being terminated" in str(exc)


def forbidden(exc: BaseException) -> bool:
    """Whether `exc` is a 403 of the API server: the namespace is being deleted (its Roles may already be gone), or
    the operator's RBAC lacks a permission (a deployment problem, not a reconcile's)."""
    return isinstance(exc, ApiError) and exc.status == 403


async def run_one(what: str, reconcile: Reconcile) -> None:
    """One reconcile of the pass; a failure is logged (a namespace being deleted at INFO), never raised."""
    try:
        await reconcile()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one object's failure must not stop the resync of the others
        if namespace_terminating(exc):
            log.info("resync of %s skipped: its namespace is being deleted", what)
        elif forbidden(exc):
            log.warning("resync of %s forbidden (namespace being deleted, or RBAC missing): %s", what, exc)
        else:
            log.warning("resync of %s failed: %s", what, exc, exc_info=True)


async def run_pass(work: Iterable[tuple[str, Reconcile]], concurrency: int = 16) -> None:
    """Reconcile each (name, reconcile) of `work`, at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(what: str, reconcile: Reconcile) -> None:
        async with gate:
            await run_one(what, reconcile)

    await asyncio.gather(*(bounded(what, reconcile) for what, reconcile in work))


async def loop(interval: float, passes: Callable[[], Iterable[Iterable[tuple[str, Reconcile]]]]) -> None:
    """Forever: wait `interval` seconds, then run each of `passes()` in turn (pools before jobs)."""
    while True:
        await asyncio.sleep(interval)
        for work in passes():
            await run_pass(work)
