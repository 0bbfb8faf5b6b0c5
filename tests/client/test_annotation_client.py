"""swarm.client against a real annotation server on loopback: per-column labels, batches, errors, closing."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

import swarm.client
from swarm.client import AnnotationError, Annotator, ColumnAnnotation, Table, TableAnnotation
from swarm.model_server.model.tables import load_labels
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(120)

ROWS = [["2021-03-04", "Paris", "12.5"], ["1999-12-31", "Berlin", "3"], ["2020-01-01", "", "7.25"]]


@pytest.fixture
def annotator(address: str) -> Iterator[Annotator]:
    with Annotator(address, timeout_s=60) as client:
        yield client


def test_one_label_per_column_with_the_table_fields(annotator: Annotator) -> None:
    result = annotator.annotate(ROWS, name="cities", request_id="req-1")
    assert isinstance(result, TableAnnotation)
    assert result.table_name == "cities" and result.request_id == "req-1"
    assert [c.column for c in result.columns] == [0, 1, 2]
    assert all(isinstance(c, ColumnAnnotation) for c in result.columns)
    assert set(result.labels) <= set(load_labels())
    assert all(0.0 < c.confidence <= 1.0 for c in result.columns)
    assert result.confidences == tuple(c.confidence for c in result.columns)
    assert sorted(result.specialists_used) == ["geographic", "temporal"]
    assert result.specialists_missing == () and result.critical_steps >= 1 and result.latency_ms > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.columns[0].label = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.critical_steps = 0  # type: ignore[misc]


def test_same_answer_as_the_raw_stub(annotator: Annotator, address: str) -> None:
    table = apb.Table(name="cities", rows=[apb.Row(cells=r) for r in ROWS])
    with grpc.insecure_channel(address) as channel:
        raw = apb_grpc.AnnotationServiceStub(channel).Annotate(table, timeout=60)
    result = annotator.annotate(ROWS, name="cities")
    assert [(c.column, c.label, c.confidence) for c in raw.columns] == [
        (c.column, c.label, c.confidence) for c in result.columns
    ]


def test_ragged_rows_rejected_unless_padded(annotator: Annotator) -> None:
    ragged = [["a", "b", "c"], ["d"], ["e", "f"]]
    with pytest.raises(AnnotationError) as info:
        annotator.annotate(ragged, name="ragged")
    assert info.value.code == "INVALID_ARGUMENT" and "row 1 has 1 cells" in info.value.message
    assert len(annotator.annotate(ragged, name="ragged", pad_ragged_rows=True).columns) == 3


def test_empty_table_is_an_annotation_error(annotator: Annotator) -> None:
    with pytest.raises(AnnotationError) as info:
        annotator.annotate([], name="empty")
    error = info.value
    assert error.code == "INVALID_ARGUMENT" and "'empty' has no rows" in error.message
    assert str(error) == f"INVALID_ARGUMENT: {error.message}"
    assert len(annotator.annotate(ROWS).columns) == 3  # the server and the client both still work


def test_cells_must_be_strings(annotator: Annotator) -> None:
    with pytest.raises(TypeError, match="row 1"):
        annotator.annotate([["a"], [1]])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        annotator.annotate("a,b")  # type: ignore[arg-type]


def test_annotate_many_streams_in_order(annotator: Annotator) -> None:
    tables = [Table([[f"r{i}", str(i)]] * (i + 1), name=f"t{i}") for i in range(3)]
    results = annotator.annotate_many([*tables, ROWS])
    assert [r.table_name for r in results] == ["t0", "t1", "t2", "table"]
    assert [len(r.columns) for r in results] == [2, 2, 2, 3]
    assert annotator.annotate_many([]) == []


def test_annotate_many_names_the_rejected_table(annotator: Annotator) -> None:
    with pytest.raises(AnnotationError) as info:
        annotator.annotate_many([Table(ROWS, name="ok"), Table([], name="bad"), Table(ROWS)])
    assert info.value.code == "INVALID_ARGUMENT" and "table 1 of the stream" in info.value.message


def test_timeout_is_deadline_exceeded(address: str) -> None:
    with Annotator(address, timeout_s=1e-4) as client, pytest.raises(AnnotationError) as info:
        client.annotate(ROWS)
    assert info.value.code == "DEADLINE_EXCEEDED"


def test_no_server_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Annotator(f"127.0.0.1:{port}", timeout_s=10) as client, pytest.raises(AnnotationError) as info:
        client.annotate(ROWS)
    assert info.value.code == "UNAVAILABLE"


def test_context_manager_closes_the_channel(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    real = grpc.insecure_channel

    def spy(target: str, options: object = None) -> grpc.Channel:
        channel = real(target, options=options)
        original_close = channel.close

        def close() -> None:
            closed.append(target)
            original_close()

        channel.close = close  # type: ignore[method-assign]
        return channel

    monkeypatch.setattr(grpc, "insecure_channel", spy)
    with Annotator(address) as client:
        assert not client.closed
        assert len(client.annotate(ROWS).columns) == 3
    assert client.closed and closed == [address]
    with pytest.raises(RuntimeError, match="closed"):
        client.annotate(ROWS)
    client.close()  # idempotent
    assert closed == [address]


def test_the_generated_stubs_stay_hidden() -> None:
    assert all(not getattr(swarm.client, n).__module__.startswith("swarm.v1") for n in swarm.client.__all__)
    assert not any("pb2" in n for n in swarm.client.__all__)
    # The client needs grpc and the wire messages only, not the model (no torch import).
    code = "import sys, swarm.client; assert 'torch' not in sys.modules, 'swarm.client imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
