"""Degradation: a specialist process SIGKILLed mid-stream, or one sending malformed chunks, is reported
missing and the table is still annotated by the remaining specialists."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_serving_tools import encode_states

from swarm.model_server.model.specialist import untrained
from swarm.model_server.serving.grpc_runtime import ManagedServer, service_handler
from swarm.model_server.serving.launcher import AnnotatorFactory, LocalSwarm, start_local_swarm
from swarm.model_server.serving.specialist_server import SERVICE
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc
from swarm.v1 import specialist_pb2 as pb

pytestmark = pytest.mark.timeout(120)

TABLE = apb.Table(
    name="t", rows=[apb.Row(cells=["2021-03-04", "Paris"]), apb.Row(cells=["1999-12-31", "Rome"])]
)


@pytest.fixture(scope="module")
def slow_swarm(annotator_factory: AnnotatorFactory) -> Iterator[LocalSwarm]:
    """temporal streams normally; geographic pauses 0.2 s between 1 KiB chunks, to be killed mid-stream."""
    with start_local_swarm(
        ["temporal", "geographic"],
        annotator=annotator_factory,
        torch_threads=1,
        per_specialist_args={"geographic": ["--chunk-kb", "1", "--chunk-delay-s", "0.2"]},
    ) as local:
        yield local


@pytest.mark.slow
def test_specialist_killed_mid_stream_is_reported_missing(slow_swarm: LocalSwarm) -> None:
    streaming = threading.Event()
    slow_swarm.client.on_chunk = lambda name, _chunk: name == "geographic" and streaming.set()
    try:
        pending = apb_grpc.AnnotationServiceStub(
            grpc.insecure_channel(slow_swarm.annotation_address)
        ).Annotate.future(TABLE, timeout=60)
        assert streaming.wait(30), "geographic never started streaming"
        killed = slow_swarm.specialists["geographic"].process  # the supervisor restarts it with a new process
        slow_swarm.kill("geographic")
        reply = pending.result()
    finally:
        slow_swarm.client.on_chunk = None
    assert killed.wait(timeout=10) < 0  # killed by the signal
    assert list(reply.specialists_used) == ["temporal"]
    assert [m.name for m in reply.specialists_missing] == ["geographic"]
    assert "UNAVAILABLE" in reply.specialists_missing[0].reason and reply.degraded
    assert len(reply.columns) == 2 and all(c.label for c in reply.columns)


class _MalformedSpecialist:
    """Answers with a float32 layer whose shape claims more elements than its bytes hold, and with decoder chunks
    that skip bytes."""

    def StreamStates(
        self, request: pb.ColumnsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StateChunk]:
        states = untrained("numeric").extract_states(list(request.columns))
        for chunk in encode_states(states, 1 << 20, specialist="numeric"):
            chunk.shape[-1] += 1
            yield chunk

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        return pb.DescribeResponse(specialist="numeric", decoder_bytes=30)

    def StreamDecoder(
        self, request: pb.DecoderRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DecoderChunk]:
        yield pb.DecoderChunk(offset=0, total_bytes=30, data=b"x" * 10)
        yield pb.DecoderChunk(offset=20, total_bytes=30, data=b"x" * 10)


@pytest.fixture
def malformed() -> Iterator[ManagedServer]:
    fake = ManagedServer(
        [(SERVICE, service_handler(SERVICE, _MalformedSpecialist()))], "127.0.0.1", 0, 4, 4 << 20
    ).start()
    yield fake
    fake.stop(0)


def test_decoder_chunks_that_do_not_add_up_are_refused(malformed: ManagedServer) -> None:
    from swarm.model_server.serving.specialist_client import SpecialistClient, SpecialistFailure

    with (
        SpecialistClient({"numeric": malformed.address}) as client,
        pytest.raises(SpecialistFailure, match=r"decoder chunk at offset 20 .* after 10 bytes"),
    ):
        client.decoder("numeric")


def test_malformed_stream_is_reported_missing_with_the_codec_error(
    slow_swarm: LocalSwarm, annotator_factory: AnnotatorFactory, malformed: ManagedServer
) -> None:
    from swarm.model_server.serving.annotation_server import build_annotation_server
    from swarm.model_server.serving.specialist_client import SpecialistClient

    client = SpecialistClient({"temporal": slow_swarm.addresses["temporal"], "numeric": malformed.address})
    annotator = annotator_factory(["temporal", "numeric"])
    server = build_annotation_server(annotator, client).start()
    try:
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address)).Annotate(
            TABLE, timeout=60
        )
    finally:
        server.stop(0)
        client.close()
    assert list(reply.specialists_used) == ["temporal"]
    (missing,) = reply.specialists_missing
    assert reply.degraded
    assert (
        missing.name == "numeric" and "malformed state stream" in missing.reason and "needs" in missing.reason
    )
