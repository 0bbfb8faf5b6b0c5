"""Memory-bounded admission (issue item 1): requests are priced (columns x tokens x states) before they run, refused
over a per-request cap with what would fit, queued under a global budget with a bounded wait, and the resident
memory of real server processes stays within the budget under a bounded concurrent load of wide tables and
returns afterwards."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_serving_tools import MiB, PeakRss, cli_swarm

from swarm.model_server.serving.admission import Admission, AdmissionLimits, AdmissionRejected, Cost, SpecialistPace
from swarm.model_server.serving.annotation_server import AnnotationLimits, build_annotation_server
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.model_server.serving.specialist_server import ServerOptions, build_specialist_server, load_source
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(180)


def _cost(mib: int, columns: int = 10) -> Cost:
    return Cost(mib * MiB, columns * 10, columns, 10, 1)


def _limits(**kw: object) -> AdmissionLimits:
    base: dict[str, object] = dict(budget_bytes=100 * MiB, max_request_bytes=80 * MiB, max_request_token_passes=10_000,
                                   max_active=4, max_queued=2, max_wait_s=0.3)
    return AdmissionLimits(**(base | kw))  # type: ignore[arg-type]


_WORDS = [f"w{i}" for i in range(40)]


def _wide(columns: int, rows: int = 20, seed: int = 0) -> apb.Table:
    """A wide table whose cells come from a small vocabulary (the same for every seed): the memory a request costs
    does not depend on what its cells say, and the serving processes encode each distinct cell with MiniLM once, in
    the warm-up, instead of spending the test's queue wait on encoding novel cells."""
    return apb.Table(
        name=f"wide{columns}-{seed}",
        rows=[apb.Row(cells=[f"{_WORDS[(r * 7 + c) % len(_WORDS)]} {c % 11}" for c in range(columns)])
              for r in range(rows)],
    )


def test_over_the_per_request_cap_is_refused_at_once_saying_what_fits() -> None:
    gate = Admission(_limits(), what="table")
    with pytest.raises(AdmissionRejected) as info:
        gate.admit(_cost(90, columns=90))
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit is 80 MiB per table" in str(info.value) and "send at most 80 columns per table" in str(info.value)
    with pytest.raises(AdmissionRejected, match="token passes per table"):
        gate.admit(Cost(MiB, 20_000, 100, 100, 2))
    assert gate.stats()["in_use_bytes"] == 0


def test_the_budget_queues_first_come_first_served_with_a_bounded_wait() -> None:
    gate = Admission(_limits(max_wait_s=5.0), what="table")
    first = gate.admit(_cost(60))
    order: list[str] = []

    def wait(name: str, mib: int) -> None:
        with gate.admit(_cost(mib)):
            order.append(name)

    threads = [threading.Thread(target=wait, args=("big", 70)), threading.Thread(target=wait, args=("small", 10))]
    for t in threads:
        t.start()
        time.sleep(0.1)  # "big" queues first
    assert gate.queued == 2 and order == []  # "small" would fit, but does not overtake "big"
    with pytest.raises(AdmissionRejected, match="server busy") as full:
        gate.admit(_cost(1))  # the queue is full
    assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.release()
    for t in threads:
        t.join(5)
    assert order == ["big", "small"] and gate.stats()["in_use_bytes"] == 0


def test_waiting_ends_with_the_wait_limit_the_deadline_or_the_client() -> None:
    gate = Admission(_limits(max_wait_s=0.3), what="table")
    held = gate.admit(_cost(60))
    start = time.monotonic()
    with pytest.raises(AdmissionRejected, match=r"^server busy: waited .*; retry after 1000 ms with backoff") as busy:
        gate.admit(_cost(60))
    assert busy.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and 0.25 < time.monotonic() - start < 2
    assert busy.value.retry_after_ms == 1000
    with pytest.raises(AdmissionRejected) as late:
        gate.admit(_cost(60), deadline=time.monotonic() + 0.1)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(AdmissionRejected) as gone:
        gate.admit(_cost(60), cancelled=lambda: True)
    assert gone.value.code == grpc.StatusCode.CANCELLED
    held.release()
    held.release()  # idempotent
    with gate.admit(_cost(60)):
        assert gate.stats()["active"] == 1


def test_the_specialists_timeout_scales_with_the_widest_request_of_a_stage() -> None:
    pace = SpecialistPace(margin=3.0, weight=0.5)
    assert pace.timeout_s(1000, base_s=30.0, left_s=300.0) == 30.0  # nothing learnt yet: the base
    pace.record(columns=10, seconds=1.0)  # 0.1 s a column
    assert pace.timeout_s(8, base_s=30.0, left_s=300.0) == 30.0  # an ordinary table keeps the base
    assert pace.timeout_s(200, base_s=30.0, left_s=300.0) == pytest.approx(60.0)  # 3 x 200 x 0.1 s
    assert pace.timeout_s(5000, base_s=30.0, left_s=300.0) == 300.0  # never past the table's deadline
    assert pace.timeout_s(8, base_s=30.0, left_s=5.0) == 5.0
    pace.record(columns=10, seconds=3.0)  # slower now: halfway to 0.3 s a column
    assert pace.timeout_s(200, base_s=30.0, left_s=300.0) == pytest.approx(3 * 200 * 0.2)
    pace.record(columns=0, seconds=1.0)  # nothing to learn from
    assert pace.timeout_s(200, base_s=30.0, left_s=300.0) == pytest.approx(3 * 200 * 0.2)


def test_a_wide_table_over_the_cap_is_refused_before_any_work(swarm: LocalSwarm) -> None:
    limits = AnnotationLimits(max_request_bytes=256 * MiB, health_interval_s=0)
    server = build_annotation_server(swarm.annotator, swarm.client, limits=limits).start()  # type: ignore[arg-type]
    try:
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Annotate(_wide(1024), timeout=30)
        assert time.monotonic() - start < 2.0
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1024 columns" in info.value.details() and "send at most" in info.value.details()
        assert server.servicer.admission.stats()["admitted"] == 0
        assert len(stub.Annotate(_wide(8, rows=3), timeout=60).columns) == 8
    finally:
        server.stop(0)


def test_the_specialist_server_prices_requests_too() -> None:
    source = load_source("temporal")[0]
    options = ServerOptions(max_request_bytes=96 * MiB, memory_budget_bytes=256 * MiB)
    server = build_specialist_server(source, options=options).start()
    try:
        stub = pb_grpc.SpecialistServiceStub(grpc.insecure_channel(server.address))
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamStates(pb.ColumnsRequest(columns=["Paris | Rome"] * 4000), timeout=30))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "send at most" in info.value.details()
        assert len(list(stub.StreamStates(pb.ColumnsRequest(columns=["Paris | Rome"] * 8), timeout=30))) > 0
    finally:
        server.stop(0)


@pytest.mark.slow
def test_real_processes_stay_within_the_memory_budget_and_give_memory_back(tmp_path: Path) -> None:
    """Loopback only, bounded: 6 concurrent 192-column tables (each priced at ~330 MiB on the annotation server)
    against a tiny 2-specialist swarm whose whole budget is 1,000 MiB; before admission existed they all ran at
    once and the swarm's RSS rose by ~2 GB."""
    budget_mib = 1000
    with cli_swarm(tmp_path, "--local", "temporal,geographic", "--config", "tiny", "--memory-budget-mb",
                   str(budget_mib), "--max-request-mb", "500", "--max-queue-wait-s", "60") as swarm:
        stub = apb_grpc.AnnotationServiceStub(
            grpc.insecure_channel(swarm.address, options=[("grpc.max_receive_message_length", 64 << 20)]))
        for i in range(3):  # warm up: first-call allocations are not what is measured
            stub.Annotate(_wide(16, seed=i), timeout=60)
        stub.Annotate(_wide(192), timeout=300)  # and the cells' MiniLM vectors, cached from here on
        pids = swarm.pids()
        assert len(pids) == 3
        time.sleep(1.0)
        meter = PeakRss(pids)
        baseline = meter.total()

        with pytest.raises(grpc.RpcError) as info:  # 1,024 columns: over the 500 MiB per-table cap
            stub.Annotate(_wide(1024), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "send at most" in info.value.details()

        with meter, ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(stub.Annotate, _wide(192, seed=i), timeout=120) for i in range(6)]
            replies = [f.result() for f in futures]
        assert all(len(r.columns) == 192 and not r.specialists_missing for r in replies)
        rise = meter.peak - baseline
        assert rise <= budget_mib * MiB, f"RSS rose by {rise / MiB:.0f} MiB over a {budget_mib} MiB budget"

        print(f"baseline {baseline / MiB:.0f} MiB, peak rise {rise / MiB:.0f} MiB")
        time.sleep(2.5)  # the idle trim
        after = meter.total() - baseline
        print(f"held after the load: {after / MiB:.0f} MiB")
        assert after <= 200 * MiB, f"{after / MiB:.0f} MiB still held after the load (peak rise {rise / MiB:.0f})"
        assert swarm.pids() == pids  # no process died or was restarted
