"""State codec: exact round trips for every wire dtype and chunking, and a clear error for every bad chunk."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from google.protobuf.message import DecodeError
from grpc_serving_tools import decode_states, encode_states

from swarm.model_server.serving import codec
from swarm.model_server.serving.codec import WireChunk, parse_chunk, serialize_chunk
from swarm.v1 import specialist_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def _states(dtype: torch.dtype, batch: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 2, 8, 4, generator=gen).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_bytes", [7, 64, 1 << 20])
def test_round_trip_is_bit_exact(dtype: torch.dtype, chunk_bytes: int) -> None:
    states = _states(dtype)
    back = decode_states(_with_stats(list(encode_states(states, chunk_bytes))))
    assert [t.dtype for t in back] == [dtype] * 3
    for a, b in zip(states, back, strict=True):
        assert torch.equal(
            a.view(torch.uint8) if dtype != torch.float32 else a,
            b.view(torch.uint8) if dtype != torch.float32 else b,
        )


def test_non_contiguous_and_empty_tensors() -> None:
    wide = torch.randn(2, 3, 4, 5).transpose(2, 3)  # (2, 3, 5, 4), not contiguous
    empty = torch.empty(0, 3, 4, 4)
    back = decode_states(_with_stats(list(encode_states([wide, empty], 16))))
    assert torch.equal(back[0], wide) and back[1].shape == (0, 3, 4, 4)


def test_chunks_stay_under_the_chunk_size() -> None:
    chunks = list(encode_states(_states(torch.float32, batch=16), 1000))
    assert max(len(c.data) for c in chunks) == 1000
    assert sum(len(c.data) for c in chunks) == 3 * 16 * 2 * 8 * 4 * 4


def test_copy_saving_serializer_matches_protobuf() -> None:
    header, data = next(codec.iter_chunks(_states(torch.bfloat16), 100))
    message = codec.to_message(header, b"", request_id="r", specialist="s")
    message.stats.steps = 1
    wire = serialize_chunk(WireChunk(message, data))
    expected = codec.to_message(header, data, request_id="r", specialist="s")
    expected.stats.steps = 1
    parsed = pb.StateChunk.FromString(wire)
    assert set(parsed.padding) <= {0}
    parsed.ClearField("padding")
    assert parsed == expected


@pytest.mark.parametrize("request_id", ["", "r", "x" * 7, "y" * 200])
@pytest.mark.parametrize("chunk_bytes", [1, 100, 1 << 16])
def test_serialized_data_starts_aligned(request_id: str, chunk_bytes: int) -> None:
    """Whatever the header's length, the padding puts data's first byte at an aligned offset of the message."""
    header, data = next(codec.iter_chunks(_states(torch.float32, batch=1024), chunk_bytes))
    wire = serialize_chunk(WireChunk(codec.to_message(header, b"", request_id=request_id), data))
    parsed = parse_chunk(wire)
    offset = wire.index(bytes(data), len(wire) - len(data))
    assert offset % codec.DATA_ALIGNMENT == 0 and bytes(parsed.data) == bytes(data)
    assert (parsed.data.obj is wire) and len(parsed.message.padding) < codec.DATA_ALIGNMENT


def _with_stats(chunks: list[pb.StateChunk]) -> list[pb.StateChunk]:
    chunks[-1].stats.steps = 1
    return chunks


def _corrupt(field: str, value: object) -> Callable[[list[pb.StateChunk]], None]:
    def apply(chunks: list[pb.StateChunk]) -> None:
        target = chunks[1]
        if field == "shape":
            del target.shape[:]
            target.shape.extend(value)  # type: ignore[arg-type]
        else:
            setattr(target, field, value)

    return apply


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_corrupt("dtype", pb.DTYPE_UNSPECIFIED), "unsupported state dtype DTYPE_UNSPECIFIED"),
        (_corrupt("dtype", 99), "unsupported state dtype 99"),
        (_corrupt("dtype", pb.DTYPE_FLOAT16), "differ from the layer's first chunk"),
        (_corrupt("shape", [3, 2, 8]), "differ from the layer's first chunk"),
        (_corrupt("layer_nbytes", 5), "layer_nbytes 5 differs"),
        (_corrupt("offset", 0), "expected offset 64"),
        (lambda chunks: setattr(chunks[11], "data", b"x" * 65), "65 bytes overrun the layer.s 768 bytes"),
        (_corrupt("layer", 1), "layer 0 is incomplete"),
        (_corrupt("num_layers", 4), "num_layers changed"),
        (lambda chunks: chunks.pop(), "stream ended early"),
        (lambda chunks: chunks[-1].ClearField("stats"), "final chunk missing"),
        (lambda chunks: chunks.append(chunks[0]), "after the final chunk"),
    ],
)
def test_bad_metadata_raises_a_clear_error(
    mutate: Callable[[list[pb.StateChunk]], None], message: str
) -> None:
    chunks = _with_stats(list(encode_states(_states(torch.float32), 64)))
    mutate(chunks)
    with pytest.raises(codec.StateCodecError, match=message):
        decode_states(chunks, source="test")


def test_first_chunk_shape_must_match_its_size() -> None:
    chunks = _with_stats(list(encode_states(_states(torch.float32), 64)))
    del chunks[0].shape[:]
    chunks[0].shape.extend([3, 2, 8, 5])
    with pytest.raises(codec.StateCodecError, match=r"needs 960"):
        decode_states(chunks)
    chunks[0].shape[:] = [1, 2]
    with pytest.raises(codec.StateCodecError, match=r"not \(B, H, K, V\)"):
        decode_states(chunks)


def test_copy_saving_parser_reads_any_field_order() -> None:
    header, data = next(codec.iter_chunks(_states(torch.float16), 100))
    message = codec.to_message(header, data, request_id="r", specialist="s")
    message.stats.compute_ms = 1.5
    for wire in (
        message.SerializeToString(),
        serialize_chunk(WireChunk(codec.to_message(header, b""), data)),
    ):
        parsed = parse_chunk(wire)
        assert bytes(parsed.data) == bytes(data) and parsed.message.layer_nbytes == header.layer_nbytes
    assert parse_chunk(message.SerializeToString()).message.stats.compute_ms == 1.5
    with pytest.raises(DecodeError):
        parse_chunk(message.SerializeToString()[:-3])


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_bf16_round_trip_with_chunks_around_the_layer_size(delta: int) -> None:
    states = _states(torch.bfloat16, batch=4)
    layer_nbytes = states[0].numel() * 2
    chunks = list(encode_states(states, layer_nbytes + delta))
    assert len(chunks) == 3 * (2 if delta < 0 else 1)
    back = decode_states(_with_stats(chunks))
    for a, b in zip(states, back, strict=True):
        assert b.dtype == torch.bfloat16 and torch.equal(a.view(torch.int16), b.view(torch.int16))


def test_reassembled_tensors_own_their_memory() -> None:
    """Decoded layers are fresh writable tensors, not views of the received message bytes."""
    states = _states(torch.bfloat16)
    wires = [serialize_chunk(WireChunk(codec.to_message(h, b""), d)) for h, d in codec.iter_chunks(states, 50)]
    parsed = [parse_chunk(w) for w in wires]
    parsed[-1].message.stats.steps = 1
    back = decode_states(parsed)
    snapshot = [w[:] for w in wires]
    back[0].fill_(0)
    assert wires == snapshot and torch.equal(back[1].view(torch.int16), states[1].view(torch.int16))


def _wires(states: list[torch.Tensor], chunk_bytes: int) -> list[bytes]:
    return [serialize_chunk(WireChunk(codec.to_message(h, b""), d)) for h, d in codec.iter_chunks(states, chunk_bytes)]


def _buffer_range(wire: bytes) -> range:
    start = torch.frombuffer(wire, dtype=torch.uint8).data_ptr()
    return range(start, start + len(wire))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_layers_in_owned_chunks_are_adopted_without_a_copy(dtype: torch.dtype) -> None:
    """A layer that arrives in one received message becomes a tensor over that message's bytes; a layer split
    over several messages is reassembled into memory of its own."""
    states = _states(dtype)
    layer_nbytes = states[0].numel() * states[0].element_size()
    for chunk_bytes, adopted in ((layer_nbytes, True), (layer_nbytes - 1, False)):
        wires = _wires(states, chunk_bytes)
        parsed = [codec.parse_received_chunk(w) for w in wires]
        parsed[-1].message.stats.steps = 1
        back = decode_states(parsed)
        for a, b in zip(states, back, strict=True):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        inside = [any(t.data_ptr() in _buffer_range(w) for w in wires) for t in back]
        assert inside == [adopted] * 3
        back[0].add_(1)  # adopted or not, the decoded states are writable
        assert not torch.equal(back[0], states[0])


def test_misaligned_owned_data_is_copied() -> None:
    """A sender that does not pad (plain protobuf serialization) may leave data misaligned: decoding then copies
    instead of making a misaligned tensor."""
    states = [torch.randn(1, 1, 2, 2)]
    for pad in range(4):
        message = codec.to_message(next(codec.iter_chunks(states))[0], codec.tensor_bytes(states[0]))
        message.request_id = "r" * pad
        message.stats.steps = 1
        wire = message.SerializeToString()
        (back,) = decode_states([codec.parse_received_chunk(wire)])
        assert torch.equal(back, states[0]) and back.data_ptr() % 4 == 0
        assert (back.data_ptr() in _buffer_range(wire)) == (
            (_buffer_range(wire).start + wire.index(bytes(codec.tensor_bytes(states[0])))) % 4 == 0
        )
