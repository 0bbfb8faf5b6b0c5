"""Hostile input: limits are checked before the data is walked and text is clipped before it is tokenized (issue
item 5); every client-supplied field is bounded and validated, no message echoes unbounded input or internals
(item 6); an all-empty column is labelled `unknown` (item 8)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import grpc
import pytest
import torch
from grpc_serving_tools import DelegatingAnnotator

from swarm.model_server.serving.annotation_server import AnnotationLimits, build_annotation_server
from swarm.model_server.serving.launcher import AnnotatorFactory, LocalSwarm
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.model_server.serving.specialist_server import PROBE_COLUMN, build_specialist_server
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(120)

ROWS = [apb.Row(cells=["2021-03-04", "Paris", "12.5"]), apb.Row(cells=["1999-12-31", "Berlin", "3"])]


@pytest.fixture(scope="module")
def stub(swarm: LocalSwarm) -> apb_grpc.AnnotationServiceStub:
    return apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address))


def _error(call: object, *args: object, **kw: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kw)  # type: ignore[operator]
        if isinstance(result, Iterator):
            list(result)
    return info.value


# -- item 5: validation costs less than the work ---------------------------------------------------------------


def test_megabytes_of_empty_rows_are_refused_before_they_are_walked(swarm: LocalSwarm) -> None:
    raw = grpc.insecure_channel(swarm.annotation_address).unary_unary(
        "/swarm.v1.AnnotationService/Annotate", request_serializer=None, response_deserializer=apb.Annotation.FromString
    )
    body = b"\x12\x00" * 7_000_000  # Table{rows: [Row{}] x 7M}: 14 MB
    start = time.monotonic()
    error = _error(raw, body, timeout=30)
    elapsed = time.monotonic() - start
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "7000000 rows" in error.details()
    assert elapsed < 1.5, f"refusing 14 MB of empty rows took {elapsed:.1f}s"


def test_a_multi_megabyte_column_is_clipped_before_it_is_tokenized(swarm: LocalSwarm) -> None:
    words = ["Paris", "Berlin", "2021-03-04", "12.5", "Rome"]
    huge = " | ".join(words[i % 5] for i in range(450_000))[:3_900_000]
    address = swarm.addresses["temporal"]
    stub = pb_grpc.SpecialistServiceStub(grpc.insecure_channel(address))
    list(stub.StreamStates(pb.ColumnsRequest(columns=["warm | up"]), timeout=30))
    start = time.monotonic()
    chunks = list(stub.StreamStates(pb.ColumnsRequest(columns=[huge]), timeout=30))
    elapsed = time.monotonic() - start
    assert chunks and chunks[-1].HasField("stats")
    assert elapsed < 1.5, f"a 3.9 MB column took {elapsed:.1f}s (tokenized whole?)"
    # Clipping changes nothing the tokenizer keeps: the states equal those of the first 12,288 characters.
    with SpecialistClient({"temporal": address}) as client:
        whole = client.fetch({"temporal": [huge]}).states["temporal"]
        clipped = client.fetch({"temporal": [huge[: 96 * 128]]}).states["temporal"]
    for a, b in zip(whole, clipped, strict=True):
        torch.testing.assert_close(a, b)


# -- item 6: bounded fields, no echo, no internals -------------------------------------------------------------


def test_a_long_table_name_is_invalid_argument_and_never_echoed(stub: apb_grpc.AnnotationServiceStub) -> None:
    name = "n" * 65_536
    ragged = apb.Table(name=name, rows=[apb.Row(cells=["a", "b"]), apb.Row(cells=["c"])])
    error = _error(stub.Annotate, ragged, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.code()
    assert "65536 characters; the limit is 256" in error.details() and "nnnnnnnnnn" not in error.details()
    # An allowed name is quoted at most 64 characters long.
    error = _error(stub.Annotate, apb.Table(name="m" * 200, rows=ragged.rows), timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "m" * 65 not in error.details()
    assert "row 1 has 1 cells" in error.details() and len(error.details()) < 300


@pytest.mark.parametrize("request_id", ["r" * (4 << 20), "two\nlines", "x" * 129], ids=["4MiB", "newline", "129"])
def test_a_bad_request_id_is_invalid_argument(stub: apb_grpc.AnnotationServiceStub, request_id: str) -> None:
    error = _error(stub.Annotate, apb.Table(name="t", rows=ROWS, request_id=request_id), timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.details()
    assert len(error.details()) < 200
    assert stub.Annotate(apb.Table(name="t", rows=ROWS, request_id="r" * 128), timeout=60).request_id == "r" * 128


def test_missing_reasons_and_internal_errors_keep_internals_in_the_log(
    swarm: LocalSwarm, annotator_factory: AnnotatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    addresses = {"temporal": swarm.addresses["temporal"], "numeric": f"127.0.0.1:{dead_port}"}
    client = SpecialistClient(addresses, timeout_s=5)
    server = build_annotation_server(annotator_factory(["temporal", "numeric"]), client,
                                     limits=AnnotationLimits(health_interval_s=0)).start()
    try:
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address)).Annotate(
            apb.Table(name="t", rows=ROWS), timeout=60)
    finally:
        server.stop(0)
        client.close()
    (missing,) = reply.specialists_missing
    assert missing.name == "numeric" and missing.reason.startswith("UNAVAILABLE")
    for internal in ("127.0.0.1", str(dead_port), "ipv4", "Failed to connect"):
        assert internal not in missing.reason, missing.reason
    assert str(dead_port) in caplog.text  # the details are in the server's log

    class Broken(DelegatingAnnotator):
        def annotate(self, *args: object) -> object:
            raise RuntimeError("secret at /srv/models/primary.safetensors")

    server = build_annotation_server(Broken(swarm.annotator), swarm.client,  # type: ignore[arg-type]
                                     limits=AnnotationLimits(health_interval_s=0)).start()
    try:
        error = _error(apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address)).Annotate,
                       apb.Table(name="t", rows=ROWS, request_id="req-7"), timeout=60)
    finally:
        server.stop(0)
    assert error.code() == grpc.StatusCode.INTERNAL and "req-7" in error.details()
    assert "secret" not in error.details() and "RuntimeError" not in error.details()
    assert "secret at /srv/models" in caplog.text


def test_the_specialist_server_bounds_what_it_echoes_and_hides_internals() -> None:
    class Failing:
        name = "temporal"
        dtype = torch.float32

        def extract_states(self, columns: list[str]) -> list[torch.Tensor]:
            if columns == [PROBE_COLUMN]:
                return [torch.zeros(1, 2, 4, 4)]
            raise RuntimeError("CUDA error at /opt/secret/kernel.cu:42")

    server = build_specialist_server(Failing()).start()
    try:
        stub = pb_grpc.SpecialistServiceStub(grpc.insecure_channel(server.address))
        error = _error(stub.StreamStates, pb.ColumnsRequest(columns=["x"], specialist="s" * 100_000), timeout=10)
        assert error.code() == grpc.StatusCode.NOT_FOUND and len(error.details()) < 300
        error = _error(stub.StreamStates, pb.ColumnsRequest(columns=["x"], request_id="r" * 200), timeout=10)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.details()
        error = _error(stub.StreamStates, pb.ColumnsRequest(columns=["x"]), timeout=10)
        assert error.code() == grpc.StatusCode.INTERNAL and "secret" not in error.details()
    finally:
        server.stop(0)


# -- item 8: an all-empty column is unknown --------------------------------------------------------------------


def test_an_all_empty_column_is_labelled_unknown_with_no_confidence(stub: apb_grpc.AnnotationServiceStub) -> None:
    table = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "", "Paris"]),
                                      apb.Row(cells=["1999-12-31", "  ", "Rome"]),
                                      apb.Row(cells=["2020-01-01", "", "Oslo"])])
    reply = stub.Annotate(table, timeout=60)
    labels = [(c.label, c.confidence) for c in reply.columns]
    assert labels[1] == ("unknown", 0.0)
    assert all(label != "unknown" and conf > 0 for label, conf in (labels[0], labels[2]))
    only_empty = stub.Annotate(apb.Table(name="e", rows=[apb.Row(cells=["", " "])] * 3), timeout=60)
    assert [(c.label, c.confidence) for c in only_empty.columns] == [("unknown", 0.0)] * 2
    assert not only_empty.specialists_missing  # nothing was routed, nothing is missing
