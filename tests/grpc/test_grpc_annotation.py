"""The annotation API end to end (annotation server → specialist processes on 127.0.0.1) and its input
policy: every bad table is a status code, never a crash, and the server keeps serving afterwards."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm.model_server.serving.annotation_server import AnnotationLimits, build_annotation_server
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(120)


def _table(rows: list[list[str]], name: str = "t", **kw: object) -> apb.Table:
    return apb.Table(name=name, rows=[apb.Row(cells=r) for r in rows], **kw)


GOOD = _table(
    [["2021-03-04", "Paris", "12.5"], ["1999-12-31", "Berlin", "3"], ["2020-01-01", "", "7.25"]],
    request_id="good-1",
)


@pytest.fixture(scope="module")
def stub(swarm: LocalSwarm) -> apb_grpc.AnnotationServiceStub:
    return apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address))


def _rejected(annotate: Callable[..., object], table: apb.Table | bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        annotate(table, timeout=30)
    return info.value


def test_annotate_labels_every_column_with_all_specialists(stub: apb_grpc.AnnotationServiceStub) -> None:
    reply = stub.Annotate(GOOD, timeout=60)
    assert reply.request_id == "good-1" and reply.table_name == "t"
    assert [c.column for c in reply.columns] == [0, 1, 2]
    assert all(c.label and 0.0 < c.confidence <= 1.0 for c in reply.columns)
    assert sorted(reply.specialists_used) == ["geographic", "numeric", "temporal"]
    assert not reply.specialists_missing and reply.critical_steps >= 1


def test_annotate_stream_answers_in_order(stub: apb_grpc.AnnotationServiceStub) -> None:
    tables = [_table([[f"r{i}", str(i)]] * (i + 1), name=f"t{i}") for i in range(3)]
    replies = list(stub.AnnotateStream(iter(tables), timeout=60))
    assert [r.table_name for r in replies] == ["t0", "t1", "t2"]
    assert all(len(r.columns) == 2 for r in replies)


@pytest.mark.parametrize(
    ("table", "code", "detail"),
    [
        (_table([]), grpc.StatusCode.INVALID_ARGUMENT, "has no rows"),
        (_table([[], []]), grpc.StatusCode.INVALID_ARGUMENT, "has no cells"),
        (
            _table([["a", "b"], ["c"], ["d", "e"]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "row 1 has 1 cells, row 0 has 2",
        ),
        (
            _table([["x"] * 1000] * 1000),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "1000000 cells and the limit is 200000 cells",
        ),
        (_table([["x"] * 2000]), grpc.StatusCode.RESOURCE_EXHAUSTED, "2000 columns and the limit is 1024"),
        (_table([["y" * (1 << 20)]] * 17), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    ],
    ids=["empty", "no-cells", "ragged", "million-cells", "too-wide", "oversized-message"],
)
def test_bad_tables_get_status_codes(
    stub: apb_grpc.AnnotationServiceStub, table: apb.Table, code: grpc.StatusCode, detail: str
) -> None:
    error = _rejected(stub.Annotate, table)
    assert error.code() == code and detail in error.details(), error.details()
    assert len(stub.Annotate(GOOD, timeout=60).columns) == 3  # still serving


def test_ragged_rows_are_padded_on_request(stub: apb_grpc.AnnotationServiceStub) -> None:
    reply = stub.Annotate(_table([["a", "b", "c"], ["d"], ["e", "f"]], pad_ragged_rows=True), timeout=60)
    assert len(reply.columns) == 3


def test_invalid_utf8_is_invalid_argument(swarm: LocalSwarm) -> None:
    channel = grpc.insecure_channel(swarm.annotation_address)
    raw = channel.unary_unary(
        "/swarm.v1.AnnotationService/Annotate",
        request_serializer=None,
        response_deserializer=apb.Annotation.FromString,
    )
    # Table{rows: [Row{cells: [b"\xff\xfe"]}]}: proto3 rejects the non-UTF-8 string at parse time.
    error = _rejected(raw, b"\x12\x04\x0a\x02\xff\xfe")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in error.details()


def test_a_bad_table_ends_a_stream_with_its_position(stub: apb_grpc.AnnotationServiceStub) -> None:
    stream = stub.AnnotateStream(iter([GOOD, _table([]), GOOD]), timeout=60)
    assert next(stream).table_name == "t"
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "table 1 of the stream" in info.value.details()


def test_unreachable_specialists_are_reported_missing(swarm: LocalSwarm) -> None:
    class RoutesToAnAbsentSpecialist:
        def __init__(self, inner: object) -> None:
            self.inner = inner
            self.specialist_names = [*inner.specialist_names, "commerce"]  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def route(self, table: object) -> dict[str, list[int]]:
            return {**self.inner.route(table), "commerce": [0]}  # type: ignore[attr-defined]

    server = build_annotation_server(
        RoutesToAnAbsentSpecialist(swarm.annotator),
        swarm.client,  # type: ignore[arg-type]
        limits=AnnotationLimits(max_concurrent=2),
    ).start()
    try:
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address)).Annotate(
            GOOD, timeout=60
        )
    finally:
        server.stop(0)
    assert [(m.name, m.reason) for m in reply.specialists_missing] == [
        ("commerce", "no address configured for this specialist")
    ]
    assert sorted(reply.specialists_used) == ["geographic", "numeric", "temporal"]


def test_health_and_reflection(swarm: LocalSwarm) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(swarm.annotation_address)
    status = (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service="swarm.v1.AnnotationService"), timeout=5)
        .status
    )
    assert status == health_pb2.HealthCheckResponse.SERVING
    reply = next(
        reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter(
                [reflection_pb2.ServerReflectionRequest(file_containing_symbol="swarm.v1.AnnotationService")]
            ),
            timeout=5,
        )
    )
    assert reply.file_descriptor_response.file_descriptor_proto
