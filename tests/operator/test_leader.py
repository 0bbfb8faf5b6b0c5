"""Leader election (operator/leader.py) against an in-memory Lease store with resourceVersion preconditions and an
injected clock: who acquires, renews, waits, takes over and when a holder gives up."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from swarm.operator.kube import ApiError
from swarm.operator.leader import Action, Elector, LeaderLost, LeaseRecord, decide, run_elected

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(10)]
DURATION = 15


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class Horizon(Exception):
    """Raised by a test's sleep to end an otherwise endless renew loop."""


class FakeLeases:
    """One Lease, merge-patched; metadata.resourceVersion in a patch is a precondition (409), as on a server."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing = 0  # the next N calls fail with 503

    def _fail(self) -> None:
        if self.failing:
            self.failing -= 1
            raise ApiError(503, "unavailable")

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        return copy.deepcopy(body)

    async def get(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        self._fail()
        lease = copy.deepcopy(self.lease)
        await asyncio.sleep(0)  # lets concurrent candidates read the same version
        return lease

    async def create(self, res: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._fail()
        if self.lease is not None:
            raise ApiError(409, "already exists")
        return self._stored(copy.deepcopy(body))

    async def patch(self, res: Any, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._fail()
        assert self.lease is not None
        if patch["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "conflict")
        body = copy.deepcopy(self.lease)
        body["spec"].update(patch["spec"])
        return self._stored(body)

    def take(self, holder: str) -> None:
        """Another replica's write."""
        assert self.lease is not None
        body = copy.deepcopy(self.lease)
        body["spec"]["holderIdentity"] = holder
        self._stored(body)

    @property
    def spec(self) -> dict[str, Any]:
        assert self.lease is not None
        return self.lease["spec"]


def elector(api: FakeLeases, identity: str, clock: Clock, **kwargs: Any) -> Elector:
    return Elector(api, "swarm", "swarm-operator", identity, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def record(holder: str, duration: float = DURATION) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=duration, transitions=0, resource_version="7")


@pytest.mark.parametrize(
    ("lease", "observed_at", "now", "action"),
    [
        (None, 0, 0, Action.CREATE),
        (record("a"), 0, 100, Action.RENEW),  # its own: renewed however old
        (record(""), 0, 0, Action.ACQUIRE),  # released
        (record("b"), 0, 14.9, Action.WAIT),
        (record("b"), 0, 15, Action.ACQUIRE),  # unchanged for a lease duration: expired
        (record("b"), 10, 20, Action.WAIT),  # counted from when this replica first saw the record
        (record("b", duration=5), 10, 15, Action.ACQUIRE),  # the holder's leaseDurationSeconds counts
    ],
)
async def test_decide(lease: LeaseRecord | None, observed_at: float, now: float, action: Action) -> None:
    assert decide(lease, "a", observed_at, now) is action


async def test_standby_takes_over_only_after_the_record_stops_changing_for_a_lease_duration() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert await a.try_once() and a.is_leader and api.spec["holderIdentity"] == "a"
    assert api.spec["leaseDurationSeconds"] == DURATION and api.spec["leaseTransitions"] == 0
    assert not await b.try_once() and b.holder == "a" and not b.is_leader
    clock.now = 10
    assert await a.try_once()  # renewed: a new resourceVersion
    clock.now = 20
    assert not await b.try_once()  # first sees the renewal now: waits until 35
    clock.now = 34.9
    assert not await b.try_once()
    clock.now = 35
    assert await b.try_once() and b.is_leader
    assert api.spec["holderIdentity"] == "b" and api.spec["leaseTransitions"] == 1
    assert not await a.try_once() and a.holder == "b"


async def test_of_two_candidates_racing_for_an_expired_lease_one_wins() -> None:
    api, clock = FakeLeases(), Clock()
    assert await elector(api, "old", clock).try_once()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert not await a.try_once() and not await b.try_once()
    clock.now = DURATION
    won = await asyncio.gather(a.try_once(), b.try_once())  # both read the same version, then both write
    assert sorted(won) == [False, True]
    assert api.spec["holderIdentity"] == ("a" if won[0] else "b") and api.spec["leaseTransitions"] == 1


async def test_release_hands_over_without_waiting_for_expiry() -> None:
    api, clock = FakeLeases(), Clock()
    changes: list[bool] = []
    a, b = elector(api, "a", clock, on_change=changes.append), elector(api, "b", clock)
    assert await a.try_once() and not await b.try_once()
    await a.release()
    assert api.spec["holderIdentity"] == "" and not a.is_leader and changes == [True, False]
    assert await b.try_once()  # no time has passed
    await a.release()  # not the holder: nothing written
    assert api.spec["holderIdentity"] == "b"


async def test_keep_stops_leading_when_another_replica_took_the_lease() -> None:
    api, clock = FakeLeases(), Clock()
    changes: list[bool] = []
    a = elector(api, "a", clock, on_change=changes.append)
    assert await a.try_once()
    api.take("b")
    with pytest.raises(LeaderLost, match="taken by b"):
        await a.keep()
    assert not a.is_leader and changes == [True, False]
    assert clock.now == pytest.approx(DURATION / 3)  # at the first renewal


async def test_keep_gives_up_when_renewals_fail_before_a_standby_could_take_over() -> None:
    api, clock = FakeLeases(), Clock()
    a = elector(api, "a", clock)
    assert await a.try_once()
    api.failing = 1000
    with pytest.raises(LeaderLost, match="not renewed"):
        await a.keep()
    assert a.renew_deadline <= clock.now < DURATION  # deposed before the lease can expire for others
    assert not a.is_leader


async def test_keep_rides_out_brief_renewal_failures() -> None:
    api, clock = FakeLeases(), Clock()
    a = elector(api, "a", clock)
    assert await a.try_once()

    failed_once: list[bool] = []

    async def sleep(seconds: float) -> None:
        if clock.now > 4 * DURATION:
            raise Horizon
        if api.version == 3 and not failed_once:
            failed_once.append(True)
            api.failing = 2  # the two attempts after the second renewal fail; the third is within the deadline
        await clock.sleep(seconds)

    a.sleep = sleep
    with pytest.raises(Horizon):
        await a.keep()
    assert failed_once and api.failing == 0
    assert a.is_leader and api.spec["holderIdentity"] == "a" and api.version > 5


async def test_run_elected_runs_the_operator_only_while_leading() -> None:
    api, clock = FakeLeases(), Clock()
    stop = asyncio.Event()
    ran: list[str] = []

    async def operate() -> None:
        ran.append("operator")

    api.lease = None
    other = elector(api, "other", clock)
    assert await other.try_once()
    standby = elector(api, "a", clock)

    async def stop_soon(seconds: float) -> None:
        stop.set()
        await asyncio.sleep(0)

    standby.sleep = stop_soon
    assert not await run_elected(standby, operate, stop) and ran == []  # stopped while standing by

    await other.release()
    a = elector(api, "a", clock)
    assert await run_elected(a, operate, asyncio.Event()) and ran == ["operator"]
    assert api.spec["holderIdentity"] == "" and not a.is_leader  # released once the operator returned


async def test_run_elected_cancels_the_operator_when_the_lease_is_lost() -> None:
    api, clock = FakeLeases(), Clock()
    lost: list[BaseException] = []
    cancelled = asyncio.Event()

    async def operate() -> None:
        api.take("b")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(LeaderLost):
        await run_elected(elector(api, "a", clock), operate, asyncio.Event(), on_lost=lost.append)
    assert len(lost) == 1 and isinstance(lost[0], LeaderLost) and cancelled.is_set()
    assert api.spec["holderIdentity"] == "b"  # not released: it was not ours any more
