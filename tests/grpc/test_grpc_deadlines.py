"""Expired and cancelled work is not computed (issue item 4): the context is checked before every stage, the
primary never runs for a call whose deadline passed, and the specialist fan-out is cancelled when the client goes
away, so calls behind them are not delayed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_serving_tools import DelegatingAnnotator

from swarm.model_server.serving.annotation_server import AnnotationLimits, AnnotationServer, build_annotation_server
from swarm.model_server.serving.grpc_runtime import ManagedServer
from swarm.model_server.serving.launcher import AnnotatorFactory
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.model_server.serving.specialist_server import ServerOptions, build_specialist_server, load_source
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(90)

TABLE = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "Paris", "3"]), apb.Row(cells=["1999-12-31", "Rome",
                                                                                                "4"])])


class CountingAnnotator(DelegatingAnnotator):
    """The real annotator, counting its calls and made slow (0.5 s), like a heavy primary."""

    def __init__(self, inner: object) -> None:
        super().__init__(inner)
        self.calls = 0

    def annotate(self, *args: object) -> object:
        self.calls += 1
        time.sleep(0.5)
        return super().annotate(*args)


@pytest.fixture(scope="module")
def slow_specialist() -> Iterator[ManagedServer]:
    """~1 s per stream: 1 KiB chunks with 20 ms between them."""
    server = build_specialist_server(
        load_source("temporal")[0], options=ServerOptions(chunk_bytes=1024, chunk_delay_s=0.02)
    ).start()
    yield server
    server.stop(0)


@pytest.fixture
def served(slow_specialist: ManagedServer, annotator_factory: AnnotatorFactory
           ) -> Iterator[tuple[AnnotationServer, CountingAnnotator]]:
    annotator = CountingAnnotator(annotator_factory(["temporal"]))
    client = SpecialistClient({"temporal": slow_specialist.address})
    limits = AnnotationLimits(max_concurrent=1, health_interval_s=0)
    server = build_annotation_server(annotator, client, limits=limits).start()  # type: ignore[arg-type]
    yield server, annotator
    server.stop(0)
    client.close()


def _active_streams(specialist: ManagedServer) -> int:
    return specialist.servicer.admission.stats()["active"]  # type: ignore[attr-defined]


def _wait_idle(specialist: ManagedServer, timeout_s: float) -> float:
    start = time.monotonic()
    while _active_streams(specialist) and time.monotonic() - start < timeout_s:
        time.sleep(0.02)
    return time.monotonic() - start


def test_expired_calls_are_not_computed_and_do_not_delay_the_next(
    served: tuple[AnnotationServer, CountingAnnotator], slow_specialist: ManagedServer
) -> None:
    server, annotator = served
    stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
    with ThreadPoolExecutor(4) as pool:
        expired = [pool.submit(stub.Annotate, TABLE, timeout=0.2) for _ in range(4)]
        time.sleep(0.05)
        start = time.monotonic()
        small = stub.Annotate(TABLE, timeout=30)  # behind the four in the one compute slot
        small_s = time.monotonic() - start
    for call in expired:
        with pytest.raises(grpc.RpcError) as info:
            call.result()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(small.columns) == 3 and list(small.specialists_used) == ["temporal"]
    assert annotator.calls == 1  # the primary ran for the small call only
    assert small_s < 2.5, f"the small call took {small_s:.1f}s behind expired ones"


def test_a_cancelled_call_cancels_the_specialist_fan_out(
    served: tuple[AnnotationServer, CountingAnnotator], slow_specialist: ManagedServer
) -> None:
    server, annotator = served
    stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
    pending = stub.Annotate.future(TABLE, timeout=30)
    deadline = time.monotonic() + 5
    while not _active_streams(slow_specialist) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _active_streams(slow_specialist) == 1
    pending.cancel()
    assert _wait_idle(slow_specialist, 5) < 0.5  # the specialist stopped streaming for a caller that is gone
    time.sleep(0.6)
    assert annotator.calls == 0
    assert server.servicer.admission.stats()["active"] == 0
