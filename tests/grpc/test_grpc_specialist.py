"""The specialist server against real servers on 127.0.0.1: states, health, reflection, limits, deadlines,
cancellation, bad requests, UNAVAILABLE retries and graceful SIGTERM draining."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from swarm.model_server.model.specialist import untrained
from swarm.model_server.serving.grpc_runtime import ManagedServer, read_ready_file, wait_serving
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.model_server.serving.specialist_client import RetryPolicy, SpecialistClient
from swarm.model_server.serving.specialist_server import ServerOptions, build_specialist_server, load_source
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(90)

COLUMNS = ["2021-03-04 | 2020-01-01 | 1999-12-31", "Paris | Berlin | Rome", "12.5 | 3 | 7.25"]


@pytest.fixture(scope="module")
def source() -> object:
    return load_source("temporal")[0]


@pytest.fixture(scope="module")
def slow_server(source: object) -> Iterator[ManagedServer]:
    """In-process server allowing one stream at a time, with a pause between its small chunks."""
    server = build_specialist_server(
        source, options=ServerOptions(max_streams=1, chunk_bytes=1024, chunk_delay_s=0.05)
    ).start()
    yield server
    server.stop(0)


def _stub(address: str) -> pb_grpc.SpecialistServiceStub:
    return pb_grpc.SpecialistServiceStub(grpc.insecure_channel(address))


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        list(call)  # type: ignore[call-overload]
    return info.value.code()


def test_streams_the_states_of_the_served_specialist(swarm: LocalSwarm) -> None:
    with SpecialistClient({"temporal": swarm.addresses["temporal"]}) as client:
        result = client.fetch({"temporal": COLUMNS}, request_id="t1")
    assert not result.missing and result.steps == {"temporal": 1}
    expected = untrained("temporal").extract_states(COLUMNS)
    got = result.states["temporal"]
    assert [t.shape for t in got] == [t.shape for t in expected]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_health_reflection_and_describe(swarm: LocalSwarm) -> None:
    channel = grpc.insecure_channel(swarm.addresses["geographic"])
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="swarm.v1.SpecialistService"), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
    )
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"swarm.v1.SpecialistService", "grpc.health.v1.Health"} <= services
    info = pb_grpc.SpecialistServiceStub(channel).Describe(pb.DescribeRequest(), timeout=5)
    assert (info.specialist, info.config, info.num_layers, info.untrained) == ("geographic", "tiny", 2, True)
    assert "postalCode" in info.labels


@pytest.mark.parametrize(
    ("request_", "code", "detail"),
    [
        (
            pb.ColumnsRequest(columns=["x"], specialist="commerce"),
            grpc.StatusCode.NOT_FOUND,
            "not 'commerce'",
        ),
        (pb.ColumnsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "columns is empty"),
        (pb.ColumnsRequest(columns=["x"] * 5000), grpc.StatusCode.INVALID_ARGUMENT, "the limit is 4096"),
        (pb.ColumnsRequest(columns=["x" * (5 << 20)]), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ],
    ids=["unknown-specialist", "empty", "too-many-columns", "oversized-message"],
)
def test_bad_requests_get_status_codes(
    swarm: LocalSwarm, request_: pb.ColumnsRequest, code: grpc.StatusCode, detail: str
) -> None:
    stub = _stub(swarm.addresses["temporal"])
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamStates(request_, timeout=10))
    assert info.value.code() == code and detail in (info.value.details() or "")


def test_invalid_utf8_is_invalid_argument(swarm: LocalSwarm) -> None:
    channel = grpc.insecure_channel(swarm.addresses["temporal"])
    raw = channel.unary_stream(
        "/swarm.v1.SpecialistService/StreamStates",
        request_serializer=None,
        response_deserializer=pb.StateChunk.FromString,
    )
    # ColumnsRequest{columns: [b"\xff\xfe"]}: field 2, length 2, bytes that are not UTF-8.
    with pytest.raises(grpc.RpcError) as info:
        list(raw(b"\x12\x02\xff\xfe", timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in info.value.details()
    assert len(list(_stub(swarm.addresses["temporal"]).StreamStates(pb.ColumnsRequest(columns=["ok"])))) > 0


def test_bfloat16_wire_states_travel_exactly(source: object) -> None:
    server = build_specialist_server(source, options=ServerOptions(wire_dtype="bfloat16")).start()
    try:
        with SpecialistClient({"temporal": server.address}) as client:
            got = client.fetch({"temporal": COLUMNS}).states["temporal"]
        expected = [s.to(torch.bfloat16) for s in source.extract_states(COLUMNS)]  # type: ignore[attr-defined]
        assert all(
            a.dtype == torch.bfloat16 and torch.equal(a.view(torch.int16), b.view(torch.int16))
            for a, b in zip(got, expected, strict=True)
        )
    finally:
        server.stop(0)


def test_concurrency_limit_deadline_and_cancellation_release_the_slot(slow_server: ManagedServer) -> None:
    stub = _stub(slow_server.address)
    request = pb.ColumnsRequest(columns=COLUMNS)
    first = stub.StreamStates(request, timeout=30)
    next(first)  # the only slot is now taken
    assert _code(stub.StreamStates(request, timeout=5)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.cancel()
    time.sleep(0.2)
    assert _code(stub.StreamStates(request, timeout=0.3)) == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.2)
    assert (
        len(list(stub.StreamStates(request, timeout=30))) == 48
    )  # 2 layers of 3*2*32*32*4 B in 1 KiB chunks


def test_unavailable_is_retried_until_the_server_comes_up(source: object) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server: list[ManagedServer] = []
    starter = threading.Timer(0.3, lambda: server.append(build_specialist_server(source, port=port).start()))
    starter.start()
    try:
        retry = RetryPolicy(attempts=8, initial_s=0.05, multiplier=2.0, max_s=0.4)
        with SpecialistClient({"temporal": f"127.0.0.1:{port}"}, retry=retry) as client:
            result = client.fetch({"temporal": COLUMNS}, timeout_s=20)
        assert not result.missing, result.missing
    finally:
        starter.join()
        for s in server:
            s.stop(0)


def test_sigterm_drains_in_flight_streams(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swarm.trainer.commands.cli",
            "serve-specialist",
            "--specialist",
            "temporal",
            "--ready-file",
            str(ready),
            "--chunk-kb",
            "1",
            "--chunk-delay-s",
            "0.02",
            "--torch-threads",
            "1",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        while (address := read_ready_file(ready)) is None:
            assert proc.poll() is None, "server exited during start-up"
            time.sleep(0.05)
        wait_serving(address, 60)
        stream = _stub(address).StreamStates(pb.ColumnsRequest(columns=COLUMNS), timeout=30)
        chunks = [next(stream)]
        proc.send_signal(signal.SIGTERM)
        chunks.extend(stream)  # ~1 s of remaining chunks arrive although the server is stopping
        assert len(chunks) == 48 and chunks[-1].HasField("stats")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("headroom", "delivered"), [(1024, True), (0, False)])
def test_chunks_just_under_the_message_limit_stream_and_over_it_fail_cleanly(
    source: object, headroom: int, delivered: bool
) -> None:
    """A chunk whose bytes plus header fit the message limit streams; one the size of the limit itself (no room
    for the header fields) is refused by gRPC as RESOURCE_EXHAUSTED, reported as a missing specialist."""
    limit = 64 * 1024
    options = ServerOptions(max_message_bytes=limit, chunk_bytes=limit - headroom)
    server = build_specialist_server(source, options=options).start()
    try:
        with SpecialistClient({"temporal": server.address}, max_message_bytes=limit) as client:
            result = client.fetch({"temporal": COLUMNS * 8}, request_id="limit")
    finally:
        server.stop(0)
    if delivered:
        assert not result.missing and len(result.states["temporal"][0]) == len(COLUMNS) * 8
    else:
        assert "RESOURCE_EXHAUSTED" in result.missing["temporal"]


def test_malloc_tuning_is_idempotent() -> None:
    from swarm.model_server.serving.specialist_client import keep_freed_memory_for_reuse

    first = keep_freed_memory_for_reuse()
    assert isinstance(first, bool) and keep_freed_memory_for_reuse() is first
