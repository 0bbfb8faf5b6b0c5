"""Leader election with a coordination.k8s.io/v1 Lease: of several `swarm operator` replicas only the holder of the
Lease runs kopf (reconciles); the others stand by and take over when it goes.

The protocol is client-go's. The holder renews `spec.renewTime` every `renew_period` (a third of the lease
duration). A candidate takes the Lease when it has no holder (a holder releases it on a clean shutdown) or when the
record has not changed for `leaseDurationSeconds`, timed on the candidate's own monotonic clock from the moment it
first saw that record (resourceVersion), so clocks that differ between nodes do not matter. Every write is a merge
patch carrying the resourceVersion it read, which the API server checks as a precondition: 409 Conflict means
another replica wrote first (lost the race). A holder that has not renewed for `renew_deadline` (two thirds of the
duration: before any candidate can take over) or that sees another holder is deposed: `keep` raises `LeaderLost`
and the command exits the process at once (`exit_now`), so two replicas never reconcile at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from swarm.operator.kube import FAILURES, LEASES, Api, ApiError

log = logging.getLogger(__name__)
DEFAULT_NAME = "swarm-operator"
DEFAULT_DURATION = 15


class LeaderLost(Exception):
    """This replica no longer holds the Lease (another took it, or renewing failed past the renew deadline)."""


class Action(enum.Enum):
    CREATE = "create"  # no Lease object yet
    ACQUIRE = "acquire"  # free (no holder) or expired: take it over
    RENEW = "renew"  # held by this replica
    WAIT = "wait"  # another replica holds it and renews it


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration: float
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=float(spec.get("leaseDurationSeconds") or DEFAULT_DURATION),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(body.get("metadata", {}).get("resourceVersion", "")),
        )


def decide(record: LeaseRecord | None, identity: str, observed_at: float, now: float) -> Action:
    """What a replica does with the Lease it read; `observed_at`: when (its clock) it first saw this record."""
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        return Action.RENEW
    if not record.holder or now - observed_at >= record.duration:
        return Action.ACQUIRE
    return Action.WAIT


def default_identity() -> str:
    """The pod's name (downward API: POD_NAME), else hostname-pid: unique among the replicas."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Acquires, renews and releases one Lease for `identity`. `clock` (monotonic seconds) and `sleep` are injected
    by tests; `on_change(leading)` is called whenever leadership changes."""

    def __init__(
        self,
        api: Api,
        namespace: str,
        name: str = DEFAULT_NAME,
        identity: str | None = None,
        *,
        duration: int = DEFAULT_DURATION,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.duration = duration
        self.renew_period = duration / 3
        self.retry_period = duration * 2 / 15
        self.renew_deadline = duration * 2 / 3
        self.clock = clock
        self.sleep = sleep
        self.on_change = on_change
        self.is_leader = False
        self.holder: str | None = None  # the holder seen by the last attempt (None: the Lease was not read)
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self._renewed_at = 0.0

    def _set_leader(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            if self.on_change is not None:
                self.on_change(leading)

    def _spec(self, **extra: Any) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "renewTime": micro_time(datetime.now(UTC)),
            **extra,
        }

    async def try_once(self) -> bool:
        """One acquire-or-renew attempt: whether this replica holds the Lease afterwards. Raises FAILURES when the
        API server is not reached or answers an error other than 409."""
        started = self.clock()  # a renewal counts from before the request: the server may apply it any time after
        self.holder = None
        body = await self.api.get(LEASES, self.namespace, self.name)
        record = LeaseRecord.of(body) if body is not None else None
        if record is not None and (self._seen is None or self._seen[0] != record.resource_version):
            self._seen = (record.resource_version, started)
        self.holder = record.holder if record is not None else ""
        action = decide(record, self.identity, self._seen[1] if self._seen else started, started)
        if action is Action.WAIT:
            return False
        try:
            if action is Action.CREATE:
                meta = {"name": self.name, "namespace": self.namespace}
                spec = self._spec(acquireTime=micro_time(datetime.now(UTC)), leaseTransitions=0)
                written = await self.api.create(
                    LEASES,
                    self.namespace,
                    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec},
                )
            else:
                assert record is not None
                extra = {}
                if action is Action.ACQUIRE:
                    extra = {"acquireTime": micro_time(datetime.now(UTC)), "leaseTransitions": record.transitions + 1}
                patch = {"metadata": {"resourceVersion": record.resource_version}, "spec": self._spec(**extra)}
                written = await self.api.patch(LEASES, self.namespace, self.name, patch)
        except ApiError as exc:
            if exc.status == 409:
                log.info("lease %s/%s: another replica wrote first (409)", self.namespace, self.name)
                return False
            raise
        if action is not Action.RENEW:
            log.info("acquired lease %s/%s as %s (%s)", self.namespace, self.name, self.identity, action.value)
        self.holder = self.identity
        self._seen = (LeaseRecord.of(written).resource_version, started)
        self._renewed_at = started
        self._set_leader(True)
        return True

    async def acquire(self) -> None:
        """Return once this replica holds the Lease (retrying every `retry_period`)."""
        announced: str | None = None
        while True:
            try:
                async with asyncio.timeout(self.renew_deadline):
                    if await self.try_once():
                        return
            except FAILURES as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc or type(exc).__name__)
            if self.holder and self.holder != announced:
                announced = self.holder
                log.info("lease %s/%s held by %s: standing by", self.namespace, self.name, self.holder)
            await self.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew the Lease held until it is lost; then raises LeaderLost (it never returns)."""
        while True:
            await self.sleep(self.renew_period)
            while True:
                left = self._renewed_at + self.renew_deadline - self.clock()
                if left <= 0:
                    self._set_leader(False)
                    raise LeaderLost(f"lease not renewed for {self.renew_deadline:g}s")
                try:
                    async with asyncio.timeout(left):
                        if await self.try_once():
                            break
                except FAILURES as exc:
                    log.warning("renewing lease %s/%s: %s", self.namespace, self.name, exc or type(exc).__name__)
                if self.holder and self.holder != self.identity:
                    self._set_leader(False)
                    raise LeaderLost(f"lease taken by {self.holder}")
                await self.sleep(min(self.retry_period, max(left, 0.0)))

    async def release(self, timeout: float = 5.0) -> None:
        """Give the Lease up (no holder) so that a standby takes over without waiting for it to expire."""
        if not self.is_leader or self._seen is None:
            return
        self._set_leader(False)
        patch = {
            "metadata": {"resourceVersion": self._seen[0]},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time(datetime.now(UTC))},
        }
        try:
            async with asyncio.timeout(timeout):
                await self.api.patch(LEASES, self.namespace, self.name, patch)
            log.info("released lease %s/%s", self.namespace, self.name)
        except FAILURES as exc:  # 409: already taken over; else it expires on its own
            log.warning("releasing lease %s/%s: %s", self.namespace, self.name, exc or type(exc).__name__)


def exit_now(exc: BaseException) -> None:
    """Leave at once with status 1 (the Deployment restarts the container as a standby): no handler may run after
    the Lease is lost, which a graceful kopf shutdown (seconds, with handlers finishing) would not guarantee."""
    log.critical("lost the leader lease (%s): exiting", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


async def run_elected(
    elector: Elector,
    operate: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    on_lost: Callable[[BaseException], None] = exit_now,
) -> bool:
    """Stand by until `elector` holds the Lease (or `stop` is set), then run `operate()` while renewing; release
    the Lease when `operate` returns or fails. Whether it ran. `on_lost` is called when the Lease is lost (the
    default exits the process); should it return, `operate` is cancelled and LeaderLost raised."""
    acquiring = asyncio.ensure_future(elector.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not acquiring.done():
        acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
        return False
    acquiring.result()
    # The keeper starts before `operate`: kopf cancels at its exit every task created after it started.
    keeper = asyncio.create_task(elector.keep(), name="lease keeper")
    work = asyncio.ensure_future(operate())
    try:
        await asyncio.wait({keeper, work}, return_when=asyncio.FIRST_COMPLETED)
        if keeper.done() and not work.done():
            lost = keeper.exception() or LeaderLost("lease keeper stopped")
            on_lost(lost)
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise lost
        await work
        return True
    finally:
        if not keeper.done():
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await elector.release()
