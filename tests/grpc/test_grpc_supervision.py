"""Supervised specialists (issue item 2): a specialist that dies is reaped, reported by the annotation server's
health and restarted with backoff; when the parent dies, its specialists die with it and nothing stays on disk."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_serving_tools import cli_swarm

from swarm.model_server.serving.annotation_server import AnnotationLimits
from swarm.model_server.serving.launcher import AnnotatorFactory, RestartPolicy, cpu_shares, start_local_swarm
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(120)

TABLE = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "Paris"]), apb.Row(cells=["1999-12-31", "Rome"])])
SERVING = health_pb2.HealthCheckResponse.SERVING


def _state(pid: int) -> str | None:
    """The process state letter (Z: zombie), None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.mark.slow
def test_a_dead_specialist_is_reaped_reported_and_restarted(annotator_factory: AnnotatorFactory) -> None:
    limits = AnnotationLimits(health_interval_s=0.2)
    with start_local_swarm(["temporal"], annotator=annotator_factory, torch_threads=1, limits=limits,
                           restart=RestartPolicy(initial_s=1.0)) as swarm:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(swarm.annotation_address))

        def status(service: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status

        assert status("swarm.v1.AnnotationService") == SERVING and status("specialist/temporal") == SERVING
        old = swarm.specialists["temporal"].process
        address = swarm.addresses["temporal"]
        swarm.kill("temporal")
        _wait(lambda: status("swarm.v1.AnnotationService") != SERVING, 5, "health to report the loss")
        assert status("specialist/temporal") != SERVING
        assert status("") == SERVING  # liveness: the annotation server itself is fine
        _wait(lambda: _state(old.pid) is None, 5, "the dead specialist to be reaped (no zombie)")
        assert old.returncode == -signal.SIGKILL
        _wait(lambda: status("swarm.v1.AnnotationService") == SERVING, 60, "the restarted specialist")
        new = swarm.specialists["temporal"]
        assert new.process.pid != old.pid and new.restarts == 1 and swarm.addresses["temporal"] == address
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address)).Annotate(
            TABLE, timeout=60)
        assert list(reply.specialists_used) == ["temporal"] and not reply.specialists_missing


@pytest.mark.slow
def test_specialists_die_with_their_parent_and_leave_no_files(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with cli_swarm(tmp_path, "--local", "temporal,numeric", "--config", "tiny", env={"TMPDIR": str(tmp)}) as swarm:
        children = [pid for pid in swarm.pids() if pid != swarm.process.pid]
        assert len(children) == 2
        try:
            os.kill(swarm.process.pid, signal.SIGKILL)  # the parent alone: no chance to clean up
            swarm.process.wait(10)
            _wait(lambda: all(_state(pid) in (None, "Z") for pid in children), 20, "the orphaned specialists to exit")
        finally:
            for pid in children:
                if _state(pid) not in (None, "Z"):
                    os.kill(pid, signal.SIGKILL)
    assert list(tmp.iterdir()) == []  # no ready files, no logs


def test_cores_are_shared_out_only_when_there_is_one_per_process() -> None:
    assert cpu_shares(3, [0, 1, 2, 3, 4, 5, 6]) == [[0, 1, 2], [3, 4], [5, 6]]  # the primary first, sizes differ by 1
    assert cpu_shares(2, [5, 4]) == [[4], [5]]
    assert cpu_shares(10, [0, 1]) is None  # 9 specialists on 2 cores: left to the scheduler
    assert cpu_shares(0, [0, 1]) is None


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a core for the primary and one for a specialist")
def test_a_local_swarm_with_a_core_per_process_pins_each_to_its_own(annotator_factory: AnnotatorFactory) -> None:
    """One specialist and the primary on two or more cores: the specialist runs on its share only (also once
    restarted), the primary (this process) on the first share while the swarm is up, and on every core again after."""
    cpus = set(os.sched_getaffinity(0))
    shares = cpu_shares(2, sorted(cpus))
    assert shares is not None
    with start_local_swarm(["temporal"], annotator=annotator_factory,
                           restart=RestartPolicy(initial_s=0.5)) as swarm:
        first = swarm.specialists["temporal"].process
        assert os.sched_getaffinity(first.pid) == set(shares[1])
        assert os.sched_getaffinity(0) == set(shares[0])
        swarm.kill("temporal")
        _wait(lambda: swarm.specialists["temporal"].process.pid != first.pid
              and swarm.specialists["temporal"].restarts == 1, 60, "the restarted specialist")
        again = swarm.specialists["temporal"].process.pid
        _wait(lambda: os.sched_getaffinity(again) == set(shares[1]), 30, "the restarted specialist pinned")
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(swarm.annotation_address))
        _wait(lambda: health.Check(health_pb2.HealthCheckRequest(service="specialist/temporal"), timeout=2).status
              == SERVING, 60, "the restarted specialist serving")
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address)).Annotate(
            TABLE, timeout=60)
        assert list(reply.specialists_used) == ["temporal"]
    assert os.sched_getaffinity(0) == cpus
