"""Each distinct cell encoded once per swarm (issue #29): the annotation server encodes a table's never-seen cells
and sends the specialists their vectors with the request; a specialist sent none encodes them itself; either way
its states are those of the specialist reading the raw text. Malformed vectors are INVALID_ARGUMENT. Real servers
on loopback (the session swarm's specialist processes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest
import torch
from grpc_serving_tools import decode_states, novel_table, stats_of

from swarm.model_server.model.cell_vectors import DIM, ENCODER, normalize, store
from swarm.model_server.model.specialist import untrained
from swarm.model_server.model.text import serialize_column
from swarm.model_server.serving.annotation_server import AnnotationLimits, AnnotationServer, build_annotation_server
from swarm.model_server.serving.codec import cell_vectors_message, columns_cell_texts
from swarm.model_server.serving.launcher import AnnotatorFactory, LocalSwarm
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def served(swarm: LocalSwarm, annotator_factory: AnnotatorFactory
           ) -> Iterator[tuple[AnnotationServer, apb_grpc.AnnotationServiceStub, dict[str, pb.StreamStats]]]:
    """An annotation server (this process) over the session swarm's specialists, and the StreamStats each
    specialist sent it last."""
    seen: dict[str, pb.StreamStats] = {}
    names = sorted(swarm.addresses)
    client = SpecialistClient(dict(swarm.addresses), timeout_s=60,
                              on_chunk=lambda name, chunk: stats_of(seen, name, chunk))
    server = build_annotation_server(annotator_factory(names), client, limits=AnnotationLimits(health_interval_s=0))
    server.start()
    channel = grpc.insecure_channel(server.address)
    yield server, apb_grpc.AnnotationServiceStub(channel), seen
    channel.close()
    server.stop(0)
    client.close()


def test_a_novel_table_is_encoded_once_in_the_whole_swarm(
        served: tuple[AnnotationServer, apb_grpc.AnnotationServiceStub, dict[str, pb.StreamStats]]) -> None:
    server, stub, seen = served
    table = novel_table(uuid.uuid4().hex[:8], columns=4, rows=6)
    texts = server.servicer.annotator.serialize(table_of(table))
    distinct = {normalize(t) for t in columns_cell_texts(texts)}
    before = server.servicer.cells.texts_encoded
    reply = stub.Annotate(table, timeout=120)
    assert not reply.degraded and sorted(reply.specialists_used) == sorted(seen)
    assert server.servicer.cells.texts_encoded - before == len(distinct)  # every distinct text once, here
    for name, stats in seen.items():
        assert stats.cells_encoded == 0, f"{name} encoded {stats.cells_encoded} cells again"
        assert stats.cells_given > 0
    again = server.servicer.cells.texts_encoded
    stub.Annotate(table, timeout=120)  # the same table again: a lookup, nothing encoded anywhere
    assert server.servicer.cells.texts_encoded == again
    assert all(stats.cells_encoded == 0 for stats in seen.values())


def test_without_vectors_the_specialists_encode_themselves(
        swarm: LocalSwarm, annotator_factory: AnnotatorFactory) -> None:
    seen: dict[str, pb.StreamStats] = {}
    client = SpecialistClient(dict(swarm.addresses), timeout_s=60,
                              on_chunk=lambda name, chunk: stats_of(seen, name, chunk))
    limits = AnnotationLimits(health_interval_s=0, send_cell_vectors=False)
    server = build_annotation_server(annotator_factory(sorted(swarm.addresses)), client, limits=limits).start()
    try:
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(server.address))
        reply = stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=3, rows=4), timeout=120)
        assert not reply.degraded and seen
        assert all(stats.cells_encoded > 0 and stats.cells_given == 0 for stats in seen.values())
    finally:
        server.stop(0)
        client.close()


def _columns(tag: str) -> list[str]:
    return [serialize_column([f"{tag} {kind} {i}" for i in range(5)], [[f"{tag} ctx {k}" for k in range(3)]])
            for kind in ("alpha", "beta", "gamma")]


def _stream(address: str, request: pb.ColumnsRequest) -> tuple[list[torch.Tensor], pb.StreamStats]:
    chunks = list(pb_grpc.SpecialistServiceStub(grpc.insecure_channel(address)).StreamStates(request, timeout=60))
    return decode_states(chunks), chunks[-1].stats


def test_states_from_sent_vectors_equal_those_from_raw_text(swarm: LocalSwarm) -> None:
    """A specialist started alone reads raw text; sent the vectors it reads them instead: the same states as the
    same specialist computing in this process from the text."""
    local = untrained("temporal")
    address = swarm.addresses["temporal"]
    sent = _columns(uuid.uuid4().hex[:8])
    store().ids(columns_cell_texts(sent))  # encoded in this process, as the annotation server would
    keys, vectors = store().vectors(columns_cell_texts(sent))
    assert len(keys) == len(set(map(normalize, columns_cell_texts(sent))))
    request = pb.ColumnsRequest(columns=sent, cell_vectors=cell_vectors_message(keys, vectors, ENCODER))
    states, stats = _stream(address, request)
    assert (stats.cells_encoded, stats.cells_given) == (0, len(keys))
    for got, want in zip(states, local.extract_states(sent), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    alone = _columns(uuid.uuid4().hex[:8])  # never seen by anyone: the specialist encodes them itself
    states, stats = _stream(address, pb.ColumnsRequest(columns=alone))
    assert stats.cells_encoded == len(set(map(normalize, columns_cell_texts(alone)))) and stats.cells_given == 0
    for got, want in zip(states, local.extract_states(alone), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _bad(make: Callable[[pb.CellVectors], None]) -> pb.CellVectors:
    keys = ["one", "two"]
    msg = cell_vectors_message(keys, torch.nn.functional.normalize(torch.randn(2, DIM), dim=-1), ENCODER)
    make(msg)
    return msg


@pytest.mark.parametrize("bad", [
    _bad(lambda m: setattr(m, "encoder", "another-encoder")),
    _bad(lambda m: setattr(m, "dim", 128)),
    _bad(lambda m: setattr(m, "data", m.data[:-2])),
    _bad(lambda m: setattr(m, "dtype", pb.DTYPE_BFLOAT16)),
    _bad(lambda m: m.texts.__setitem__(1, "one")),
    _bad(lambda m: setattr(m, "data", bytes(len(m.data)))),  # zero vectors: not unit length
    _bad(lambda m: setattr(m, "data", b"\xff\x7f" * (len(m.data) // 2))),  # NaN
], ids=["encoder", "dim", "short", "dtype", "repeated", "zero", "nan"])
def test_malformed_cell_vectors_are_invalid_argument(swarm: LocalSwarm, bad: pb.CellVectors) -> None:
    request = pb.ColumnsRequest(columns=_columns("malformed"), cell_vectors=bad)
    with pytest.raises(grpc.RpcError) as info:
        _stream(swarm.addresses["temporal"], request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cell_vectors" in (info.value.details() or "")


def table_of(message: apb.Table) -> object:
    from swarm.model_server.serving.annotation_server import table_from_proto

    return table_from_proto(message, AnnotationLimits())


def test_vectors_over_the_message_limit_are_left_for_the_specialist(swarm: LocalSwarm) -> None:
    """The client sends what fits in the request (the specialist's message limit) and the specialist encodes the
    rest: the request never fails for carrying vectors."""
    seen: dict[str, pb.StreamStats] = {}
    columns = [serialize_column([f"{uuid.uuid4().hex} {c} {r}" for r in range(12)]) for c in range(8)]
    wanted = columns_cell_texts(columns)
    store().ids(wanted)

    def vectors(texts: Sequence[str], room: int) -> pb.CellVectors:
        keys, found = store().vectors(columns_cell_texts(texts))
        return cell_vectors_message(keys, found, ENCODER, room)

    limit = 64 * 1024 + sum(map(len, columns)) + 40 * 1024  # headroom, texts, ~50 of the ~100 vectors
    with SpecialistClient({"temporal": swarm.addresses["temporal"]}, max_request_bytes=limit,
                          on_chunk=lambda name, chunk: stats_of(seen, name, chunk)) as client:
        result = client.fetch({"temporal": columns}, timeout_s=120, cell_vectors=vectors)
    assert not result.missing and len(result.states["temporal"][0]) == len(columns)
    stats = seen["temporal"]
    assert 0 < stats.cells_given < len(wanted)
    assert stats.cells_given + stats.cells_encoded == len(wanted)


def test_a_specialist_sent_every_vector_never_loads_its_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started, probed and serving requests whose cells all come with vectors: no MiniLM in the process (its
    weights and the libraries behind it are most of a specialist's idle memory otherwise)."""
    from swarm.model_server.model.cell_vectors import CellVectorStore
    from swarm.model_server.model.column_encoder import ColumnEncoder
    from swarm.model_server.serving.specialist_server import build_specialist_server, load_source

    own = CellVectorStore(None, write_dir=False)  # a fresh process's store: nothing cached
    monkeypatch.setattr("swarm.model_server.model.backbone.store", lambda: own)
    monkeypatch.setattr("swarm.model_server.model.cell_vectors.store", lambda: own)
    source = load_source("temporal")[0]
    source.tokenizer = ColumnEncoder(source.tokenizer.max_len, cells=own)  # type: ignore[attr-defined]
    server = build_specialist_server(source).start()
    try:
        assert own._encoder is None and own.capacity is not None  # probed, and a serving store
        columns = _columns(uuid.uuid4().hex[:8])
        wanted = columns_cell_texts(columns)
        store().ids(wanted)  # this test's own store encodes them, standing in for the annotation server
        keys, vectors = store().vectors(wanted)
        request = pb.ColumnsRequest(columns=columns, cell_vectors=cell_vectors_message(keys, vectors, ENCODER))
        states, stats = _stream(server.address, request)
        assert len(states[0]) == len(columns) and stats.cells_encoded == 0
        assert own._encoder is None
    finally:
        server.stop(0)
