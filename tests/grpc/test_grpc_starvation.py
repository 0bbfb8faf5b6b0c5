"""No starvation (issue item 3): idle AnnotateStreams are limited and closed by the server, health is served outside
the worker pool, and the pool is larger than everything admission lets in."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm.model_server.serving.annotation_server import SERVICE, AnnotationLimits, build_annotation_server
from swarm.model_server.serving.grpc_runtime import ManagedServer, service_handler
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(60)

GOOD = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "Paris"]), apb.Row(cells=["1999-12-31", "Rome"])])
SERVING = health_pb2.HealthCheckResponse.SERVING


def _never_fed(stop: threading.Event) -> Iterator[apb.Table]:
    stop.wait()
    return
    yield  # a generator that sends nothing until the test ends


def test_idle_streams_cannot_starve_annotate_or_health(swarm: LocalSwarm) -> None:
    limits = AnnotationLimits(max_streams=2, stream_idle_s=1.5, health_interval_s=0)
    server = build_annotation_server(swarm.annotator, swarm.client, limits=limits).start()  # type: ignore[arg-type]
    stop = threading.Event()
    channel = grpc.insecure_channel(server.address)
    stub = apb_grpc.AnnotationServiceStub(channel)
    try:
        # Eight streams opened without a deadline and never fed (the attack).
        streams = [stub.AnnotateStream(_never_fed(stop)) for _ in range(8)]
        outcomes: list[grpc.StatusCode] = []
        lock = threading.Lock()

        def drain(call: Iterator[apb.Annotation]) -> None:
            try:
                list(call)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            with lock:
                outcomes.append(code)

        readers = [threading.Thread(target=drain, args=(s,), daemon=True) for s in streams]
        for r in readers:
            r.start()
        time.sleep(0.5)
        start = time.monotonic()
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        assert status.status == SERVING and time.monotonic() - start < 1.0
        assert len(stub.Annotate(GOOD, timeout=20).columns) == 2
        for r in readers:
            r.join(10)
        # Six refused at once (over the stream limit), the two admitted ones closed by the idle timeout.
        assert sorted(c.name for c in outcomes) == ["DEADLINE_EXCEEDED"] * 2 + ["RESOURCE_EXHAUSTED"] * 6
        assert len(stub.Annotate(GOOD, timeout=20).columns) == 2
    finally:
        stop.set()
        server.stop(0)


def test_a_stream_that_keeps_sending_is_served_in_order(swarm: LocalSwarm) -> None:
    limits = AnnotationLimits(max_streams=1, stream_idle_s=2.0, health_interval_s=0)
    server = build_annotation_server(swarm.annotator, swarm.client, limits=limits).start()  # type: ignore[arg-type]
    try:
        def slow_tables() -> Iterator[apb.Table]:
            for i in range(3):
                time.sleep(0.3)  # slower than nothing, faster than the idle limit
                yield apb.Table(name=f"t{i}", rows=GOOD.rows)

        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
        assert [r.table_name for r in stub.AnnotateStream(slow_tables(), timeout=30)] == ["t0", "t1", "t2"]
    finally:
        server.stop(0)


class _Blocking:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def Annotate(self, request: apb.Table, context: grpc.ServicerContext) -> apb.Annotation:
        self.entered.release()
        self.release.wait(30)
        return apb.Annotation()

    def AnnotateStream(self, requests: Iterator[apb.Table], context: grpc.ServicerContext) -> Iterator[apb.Annotation]:
        yield from ()


def test_health_answers_while_every_worker_is_busy() -> None:
    servicer = _Blocking()
    server = ManagedServer([(SERVICE, service_handler(SERVICE, servicer))], "127.0.0.1", 0, max_workers=2,
                           max_message_bytes=1 << 20).start()
    try:
        channel = grpc.insecure_channel(server.address)
        stub = apb_grpc.AnnotationServiceStub(channel)
        calls = [stub.Annotate.future(GOOD, timeout=30) for _ in range(3)]  # two workers busy, one call queued
        assert servicer.entered.acquire(timeout=5) and servicer.entered.acquire(timeout=5)
        start = time.monotonic()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert reply.status == SERVING and time.monotonic() - start < 1.0
        servicer.release.set()
        assert all(c.result() is not None for c in calls)
    finally:
        servicer.release.set()
        server.stop(0)
