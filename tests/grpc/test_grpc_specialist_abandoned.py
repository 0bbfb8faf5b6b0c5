"""Deadlines end work in specialists (issue #29): a request whose deadline passes or whose caller leaves is not
encoded or computed further. Work is counted (cell texts encoded, forward passes) on a real specialist server on
loopback whose cell-vector store is slow like MiniLM on never-seen cells."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc
import pytest
import torch

from swarm.model_server.model.cell_vectors import DIM, CellVectorStore
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.text import serialize_column
from swarm.model_server.serving.grpc_runtime import ManagedServer
from swarm.model_server.serving.specialist_server import (
    ENCODE_CHUNK,
    ServerOptions,
    build_specialist_server,
    load_source,
)
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(120)

ENCODE_S = 0.02  # per never-seen text: 64 columns of 12 novel cells take ~17 s to encode in full
PASS_S = 0.02  # added to every forward pass


class SlowStore(CellVectorStore):
    """A cell-vector store without MiniLM: random unit vectors, ENCODE_S per text, counted."""

    def __init__(self) -> None:
        super().__init__(cache_dir=None)
        self.encoded = 0

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        for _ in texts:  # counted as they go, like a batch being encoded
            time.sleep(ENCODE_S)
            self.encoded += 1
        return torch.nn.functional.normalize(torch.randn(len(texts), DIM), dim=-1)


@dataclass
class Served:
    server: ManagedServer
    store: SlowStore
    passes: list[int]  # columns of each forward pass, in order
    stub: pb_grpc.SpecialistServiceStub


@pytest.fixture
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A temporal specialist (untrained) with a SlowStore as the process's store (what its column encoder, its
    backbone and its knowledge rows read), counting its forward passes; `batch_columns` from the test's parameter
    (default 64)."""
    source = load_source("temporal")[0]
    store = SlowStore()
    monkeypatch.setattr("swarm.model_server.model.backbone.store", lambda: store)
    monkeypatch.setattr("swarm.model_server.model.cell_vectors.store", lambda: store)
    source.tokenizer = ColumnEncoder(source.tokenizer.max_len, cells=store)  # type: ignore[attr-defined]
    passes: list[int] = []
    extract = source.extract_states

    def counted(columns: Sequence[str]) -> list[torch.Tensor]:
        passes.append(len(columns))
        time.sleep(PASS_S)
        return extract(columns)

    source.extract_states = counted  # type: ignore[method-assign]
    options = ServerOptions(batch_columns=getattr(request, "param", 64))
    server = build_specialist_server(source, options=options).start()
    passes.clear()  # the server's probe at start
    channel = grpc.insecure_channel(server.address)
    yield Served(server, store, passes, pb_grpc.SpecialistServiceStub(channel))
    channel.close()
    server.stop(0)


def _novel_columns(n: int, tag: str) -> list[str]:
    return [serialize_column([f"{tag} cell {c}-{r}" for r in range(12)]) for c in range(n)]


def _settled(count: object, quiet_s: float = 1.0) -> int:
    """The count once it has not changed for `quiet_s` (work still running after the call ended would change it)."""
    last = count()  # type: ignore[operator]
    while True:
        time.sleep(quiet_s)
        now = count()  # type: ignore[operator]
        if now == last:
            return now
        last = now


def test_a_passed_deadline_stops_the_encoding(served: Served) -> None:
    texts = _novel_columns(64, "deadline")
    with pytest.raises(grpc.RpcError) as info:
        list(served.stub.StreamStates(pb.ColumnsRequest(columns=texts), timeout=1.0))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    encoded = _settled(lambda: served.store.encoded)
    # ~832 texts to encode in all; 1 s of encoding is ~50, plus the chunk under way when the deadline passed.
    assert encoded <= 1.0 / ENCODE_S + 2 * ENCODE_CHUNK, f"{encoded} texts encoded for a caller that had gone"
    assert served.passes == []  # and no forward pass ran
    assert served.server.servicer.admission.stats()["active"] == 0  # type: ignore[attr-defined]


def test_a_caller_that_leaves_stops_the_encoding(served: Served) -> None:
    texts = _novel_columns(64, "cancel")
    call = served.stub.StreamStates(pb.ColumnsRequest(columns=texts), timeout=60)
    started = threading.Event()
    threading.Thread(target=lambda: (time.sleep(0.5), started.set(), call.cancel()), daemon=True).start()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert started.is_set() and info.value.code() == grpc.StatusCode.CANCELLED
    encoded = _settled(lambda: served.store.encoded)
    assert 0 < encoded <= 0.5 / ENCODE_S + 2 * ENCODE_CHUNK, f"{encoded} texts encoded for a caller that left"
    assert served.passes == []


@pytest.mark.parametrize("served", [1], indirect=True)
def test_a_passed_deadline_stops_the_forward_passes(served: Served) -> None:
    texts = [serialize_column(["Paris", "Rome"])] * 200  # two cells, encoded at once: the work is the passes
    list(served.stub.StreamStates(pb.ColumnsRequest(columns=texts[:1]), timeout=30))  # warm: cells encoded
    served.passes.clear()
    with pytest.raises(grpc.RpcError) as info:  # 200 passes of at least PASS_S: 4 s or more in full
        list(served.stub.StreamStates(pb.ColumnsRequest(columns=texts), timeout=0.5))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    passes = _settled(lambda: len(served.passes))
    assert 0 < passes <= 0.5 / PASS_S + 2, f"{passes} forward passes for a caller that had gone"


def test_a_request_in_time_is_encoded_and_computed_in_full(served: Served) -> None:
    texts = _novel_columns(3, "complete")
    chunks = list(served.stub.StreamStates(pb.ColumnsRequest(columns=texts), timeout=60))
    assert chunks and served.store.encoded >= 3 * 13 and served.passes == [3]
