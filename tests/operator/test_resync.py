"""The resync task (operator/resync.py): every object once per pass, bounded, one failure never stops the others,
a namespace being deleted is no error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from swarm.operator import resync
from swarm.operator.kube import ApiError

pytestmark = pytest.mark.timeout(30)
TERMINATING = ApiError(403, 'POST .../deployments: unable to create new content in namespace x because it is being '
                            'terminated')  # fmt: skip


def test_classifies_403s() -> None:
    assert resync.namespace_terminating(TERMINATING) and resync.forbidden(TERMINATING)
    rbac = ApiError(403, 'cannot list resource "deployments"')
    assert not resync.namespace_terminating(rbac) and resync.forbidden(rbac)
    assert not resync.forbidden(ApiError(409, "conflict")) and not resync.forbidden(ValueError("x"))


@pytest.mark.asyncio
async def test_a_pass_runs_everything_bounded_and_survives_failures(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []
    running, most = 0, 0

    def work(name: str, error: Exception | None = None) -> tuple[str, resync.Reconcile]:
        async def reconcile() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            if error is not None:
                raise error
            done.append(name)

        return name, reconcile

    items = [work(f"ok-{i}") for i in range(10)]
    items += [work("gone", TERMINATING), work("broken", KeyError("boom"))]
    with caplog.at_level(logging.INFO, logger=resync.__name__):
        await resync.run_pass(items, concurrency=3)
    assert sorted(done) == sorted(f"ok-{i}" for i in range(10)) and most == 3
    levels = {r.getMessage().split()[2]: r.levelno for r in caplog.records}
    assert levels == {"gone": logging.INFO, "broken": logging.WARNING}


@pytest.mark.asyncio
async def test_the_loop_runs_pass_after_pass_until_cancelled() -> None:
    passes = 0

    def every() -> list[list[tuple[str, resync.Reconcile]]]:
        nonlocal passes
        passes += 1
        return []

    task = asyncio.ensure_future(resync.loop(0.01, every))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert passes >= 3
