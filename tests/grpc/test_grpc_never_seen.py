"""Serving never-seen tables (issue #29): invisible cells are empty, degradation is explicit (or refused with
`require_specialists`), and every RESOURCE_EXHAUSTED has one message shape and a `retry-after-ms` trailer,
including the limit on calls in flight. Real servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_serving_tools import DelegatingAnnotator

from swarm.model_server.model.column_features import column_features, is_empty_cell
from swarm.model_server.serving.annotation_server import AnnotationLimits, AnnotationServer, build_annotation_server
from swarm.model_server.serving.grpc_runtime import NO_RETRY, RETRY_AFTER_KEY
from swarm.model_server.serving.launcher import AnnotatorFactory, LocalSwarm
from swarm.model_server.serving.primary_annotator import UNKNOWN
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(180)

INVISIBLE = ["\u200b", "\ufeff", "\u200c\u200d", "\u2060", " \u200b\t", "\u00ad", "\u202f\u200e"]


def _table(*columns: list[str], name: str = "t") -> apb.Table:
    return apb.Table(name=name, rows=[apb.Row(cells=list(row)) for row in zip(*columns, strict=True)])


def _retry_after(error: grpc.RpcError) -> int | None:
    values = [int(v) for k, v in error.trailing_metadata() or () if k == RETRY_AFTER_KEY]  # type: ignore[attr-defined]
    return values[0] if values else None


def _dead_address() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def served(request: pytest.FixtureRequest, swarm: LocalSwarm, annotator_factory: AnnotatorFactory
           ) -> Iterator[tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]]:
    """An annotation server over the session swarm's temporal specialist and a dead "geographic"; the test's
    parametrized AnnotationLimits (default: none set)."""
    limits = getattr(request, "param", AnnotationLimits(health_interval_s=0))
    client = SpecialistClient({"temporal": swarm.addresses["temporal"], "geographic": _dead_address()}, timeout_s=10)
    server = build_annotation_server(annotator_factory(["temporal", "geographic"]), client, limits=limits).start()
    channel = grpc.insecure_channel(server.address)
    yield server, apb_grpc.AnnotationServiceStub(channel)
    channel.close()
    server.stop(0)
    client.close()


# -- 1. bad input: invisible cells are empty ------------------------------------------------------------------------


def test_empty_cell_is_one_definition() -> None:
    assert all(is_empty_cell(c) for c in ["", "  ", "\n", *INVISIBLE])
    assert not any(is_empty_cell(c) for c in ["a", "\u200ba", " 0 ", "\u00e9", "-", "\u0663"])
    assert column_features(INVISIBLE).abs().sum() == 0  # the features read the same cells as empty
    assert column_features(["\u200b", "12"]).equal(column_features(["12"]))


def test_columns_of_invisible_cells_are_unknown_like_empty_ones(swarm: LocalSwarm) -> None:
    stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address))
    n = len(INVISIBLE)
    table = _table(INVISIBLE, [""] * n, ["\ufeff"] * n, ["\u200b"] * (n - 1) + ["Paris"],
                   ["2021-03-04", "1999-12-31", "2020-01-01", "2019-05-06", "2018-07-08", "2017-09-10", "2016-11-12"])
    reply = stub.Annotate(table, timeout=60)
    labels = [(c.label, c.confidence, list(c.specialists)) for c in reply.columns]
    assert labels[:3] == [(UNKNOWN, 0.0, [])] * 3, labels
    for label, confidence, specialists in labels[3:]:  # a visible cell makes a column worth classifying
        assert label != UNKNOWN and confidence > 0 and specialists


# -- 3. explicit degradation ----------------------------------------------------------------------------------------


def test_a_complete_answer_is_not_degraded(swarm: LocalSwarm) -> None:
    reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address)).Annotate(
        _table(["2021-03-04", "1999-12-31"], ["Paris", "Rome"]), timeout=60)
    assert not reply.degraded and not reply.specialists_missing and len(reply.specialists_used) == 3


def test_an_answer_without_a_lost_specialist_says_degraded(
    served: tuple[AnnotationServer, apb_grpc.AnnotationServiceStub],
) -> None:
    _, stub = served
    reply = stub.Annotate(_table(["2021-03-04", "1999-12-31"], ["Paris", "Rome"]), timeout=60)
    assert reply.degraded
    assert list(reply.specialists_used) == ["temporal"]
    assert [m.name for m in reply.specialists_missing] == ["geographic"]
    assert "UNAVAILABLE" in reply.specialists_missing[0].reason
    assert all(list(c.specialists) == ["temporal"] for c in reply.columns)


@pytest.mark.parametrize("served", [AnnotationLimits(health_interval_s=0, require_specialists=True,
                                                     retry_after_ms=250)], indirect=True)
def test_require_specialists_answers_unavailable_with_a_retry_hint(
    served: tuple[AnnotationServer, apb_grpc.AnnotationServiceStub],
) -> None:
    server, stub = served
    for call in (lambda t: stub.Annotate(t, timeout=60), lambda t: list(stub.AnnotateStream(iter([t]), timeout=60))):
        with pytest.raises(grpc.RpcError) as info:
            call(_table(["2021-03-04", "1999-12-31"], ["Paris", "Rome"]))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "geographic (UNAVAILABLE" in info.value.details()
        assert "require_specialists" in info.value.details()
        assert _retry_after(info.value) == 250
    assert server.servicer.admission.stats()["active"] == 0


# -- 4. one RESOURCE_EXHAUSTED shape, with a retry hint -------------------------------------------------------------


def _exhausted(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return info.value


def _assert_busy(error: grpc.RpcError, retry_after_ms: int) -> None:
    details = error.details()
    assert details.startswith("server busy: ") and f"retry after {retry_after_ms} ms" in details, details
    assert _retry_after(error) == retry_after_ms


def _assert_too_large(error: grpc.RpcError) -> None:
    details = error.details()
    assert details.startswith("too large: ") and "; " in details and "cannot succeed" in details, details
    assert _retry_after(error) == NO_RETRY


def test_a_table_over_a_limit_is_too_large_and_not_to_be_retried(swarm: LocalSwarm) -> None:
    limits = AnnotationLimits(max_columns=4, max_cells=12, max_request_bytes=1, health_interval_s=0)
    server = build_annotation_server(swarm.annotator, swarm.client, limits=limits).start()  # type: ignore[arg-type]
    try:
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
        wide = _exhausted(lambda: stub.Annotate(_table(*[["x"]] * 5), timeout=30))
        _assert_too_large(wide)
        assert "5 columns and the limit is 4 columns per table" in wide.details()
        _assert_too_large(_exhausted(lambda: stub.Annotate(_table(["x"] * 13), timeout=30)))
        priced = _exhausted(lambda: stub.Annotate(_table(["x"]), timeout=30))  # over the 1-byte cap
        _assert_too_large(priced)
        assert "send at most 1 columns per table" in priced.details()
        in_stream = _exhausted(lambda: list(stub.AnnotateStream(iter([_table(*[["x"]] * 5)]), timeout=30)))
        _assert_too_large(in_stream)
        assert in_stream.details().endswith("(table 0 of the stream)")
    finally:
        server.stop(0)


class _Held(DelegatingAnnotator):
    """Routing waits until `release` is set: the calls stay in the worker pool."""

    def __init__(self, inner: object) -> None:
        super().__init__(inner)
        self.release = threading.Event()
        self.waiting = 0

    def route(self, table: object) -> dict[str, list[int]]:
        self.waiting += 1
        self.release.wait(60)
        return super().route(table)


def test_busy_refusals_share_the_shape_and_carry_the_hint(swarm: LocalSwarm,
                                                           annotator_factory: AnnotatorFactory) -> None:
    """Queue full, stream limit, and the limit on calls in flight (which gRPC itself would refuse in its own
    words, "Concurrent RPC limit exceeded!", without a hint)."""
    annotator = _Held(annotator_factory(["temporal"]))
    limits = AnnotationLimits(max_concurrent=1, max_queued=0, max_streams=1, health_interval_s=0, retry_after_ms=300)
    with SpecialistClient({"temporal": swarm.addresses["temporal"]}) as client:
        server = build_annotation_server(annotator, client, limits=limits).start()  # type: ignore[arg-type]
        channel = grpc.insecure_channel(server.address)
        stub = apb_grpc.AnnotationServiceStub(channel)
        table = _table(["2021-03-04"], ["Paris"])
        try:
            # AnnotateStream limit: one open stream (blocked in routing) and a second one refused.
            first_stream = stub.AnnotateStream(iter([table]), timeout=60)
            _wait(lambda: annotator.waiting == 1)
            stream_refusal = _exhausted(lambda: list(stub.AnnotateStream(iter([table]), timeout=30)))
            _assert_busy(stream_refusal, 300)
            assert "AnnotateStream" in stream_refusal.details()

            # Calls in flight: limits.workers x 4 in the pool (running or queued), then refusals.
            in_flight = 4 * limits.workers
            pending = [stub.Annotate.future(table, timeout=60) for _ in range(in_flight - 1)]
            _wait(lambda: server.workers.in_flight == in_flight)
            start = time.monotonic()
            over = _exhausted(lambda: stub.Annotate(table, timeout=30))
            assert time.monotonic() - start < 2.0  # refused on threads of its own, not behind the busy workers
            _assert_busy(over, 300)
            assert f"limit of {in_flight} calls in flight" in over.details()
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            # Queue full: once released, one table runs and the others find no room to wait.
            annotator.release.set()
            outcomes = [_outcome(f.result) for f in pending] + [_outcome(lambda: list(first_stream))]
            refused = [e for e in outcomes if isinstance(e, grpc.RpcError)]
            odd = [(e.code(), e.details()) for e in refused if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert refused and not odd, odd
            for error in refused:
                _assert_busy(error, 300)
            assert any("waiting (the limit)" in e.details() for e in refused)
            _wait(lambda: server.workers.in_flight == 0, 5)
        finally:
            annotator.release.set()
            channel.close()
            server.stop(0)


def _outcome(call: Callable[[], object]) -> object:
    """What the call returns, or its RpcError."""
    try:
        return call()
    except grpc.RpcError as exc:
        return exc


def _wait(condition: object, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_concurrent_refusals_do_not_leak_the_in_flight_count(swarm: LocalSwarm) -> None:
    limits = AnnotationLimits(max_columns=1, health_interval_s=0)
    server = build_annotation_server(swarm.annotator, swarm.client, limits=limits).start()  # type: ignore[arg-type]
    try:
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
        with ThreadPoolExecutor(8) as pool:
            errors = list(pool.map(lambda _: _outcome(lambda: stub.Annotate(_table(["a"], ["b"]), timeout=30)),
                                   range(32)))
        assert all(isinstance(e, grpc.RpcError) and _retry_after(e) == NO_RETRY for e in errors)
        _wait(lambda: server.workers.in_flight == 0, 5)
    finally:
        server.stop(0)
