"""State codec: per-layer (B, H, K, V) tensors ⇄ `swarm.v1.StateChunk` messages of raw little-endian bytes.

Encoding never loops over elements: each tensor is made contiguous once, viewed as bytes through numpy
(bf16/f16 through int16, since numpy has no bfloat16) and sliced with memoryviews. Decoding writes every chunk
straight into the bytes of one freshly allocated (not zero-filled) tensor per layer, except that a layer which
arrives whole in one freshly received message becomes a tensor over that message's bytes, without any copy
(see `WireChunk.owned`; the sender pads so that those bytes are aligned). Every inconsistency in the received
metadata (dtype, shape, sizes, order, missing layers or trailer) raises `StateCodecError` with what was wrong.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from google.protobuf.message import DecodeError
from torch import Tensor

from swarm.v1 import specialist_pb2 as pb

DEFAULT_CHUNK_BYTES = 3 << 20  # stays under gRPC's default 4 MiB message limit with the header fields
MAX_LAYERS = 1024
MAX_LAYER_BYTES = 1 << 34
# `data`'s offset in a serialized chunk is a multiple of this: CPython's bytes payloads start 16-byte aligned
# (malloc alignment + a 32-byte object header), so a received layer's bytes are aligned for any element type.
DATA_ALIGNMENT = 16

# torch warns once per process that a tensor over read-only bytes can be written to; for the owned chunks this
# module adopts, that is the intent (see WireChunk.owned).
warnings.filterwarnings(
    "ignore", message="The given buffer is not writable", category=UserWarning, module=re.escape(__name__)
)

# wire dtype -> (torch dtype, same-size integer dtype used to view the bytes through numpy)
_DTYPES: dict[pb.Dtype, tuple[torch.dtype, torch.dtype]] = {
    pb.DTYPE_FLOAT32: (torch.float32, torch.int32),
    pb.DTYPE_BFLOAT16: (torch.bfloat16, torch.int16),
    pb.DTYPE_FLOAT16: (torch.float16, torch.int16),
}
_WIRE_DTYPES = {torch_dtype: wire for wire, (torch_dtype, _) in _DTYPES.items()}


class StateCodecError(ValueError):
    """Received state chunks whose metadata or bytes do not describe a valid set of layer tensors."""


def wire_dtype(dtype: torch.dtype) -> pb.Dtype:
    try:
        return _WIRE_DTYPES[dtype]
    except KeyError:
        raise StateCodecError(
            f"cannot send {dtype} states; supported: {sorted(map(str, _WIRE_DTYPES))}"
        ) from None


def torch_dtype(wire: pb.Dtype) -> torch.dtype:
    try:
        return _DTYPES[wire][0]
    except KeyError:
        name = pb.Dtype.Name(wire) if wire in pb.Dtype.values() else str(wire)
        raise StateCodecError(f"unsupported state dtype {name} on the wire") from None


def tensor_bytes(tensor: Tensor) -> memoryview:
    """A flat byte view of the tensor in little-endian C order; copies only if it is not contiguous on CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    array = flat.view(_DTYPES[wire_dtype(flat.dtype)][1]).numpy()
    if sys.byteorder != "little":
        array = array.byteswap()
    return memoryview(array).cast("B")  # type: ignore[arg-type]  # numpy types ndarray.__buffer__ only on 3.12+


@dataclass(frozen=True)
class ChunkHeader:
    """A StateChunk minus its bytes: lets a fast serializer append `data` without copying it first."""

    layer: int
    num_layers: int
    dtype: pb.Dtype
    shape: tuple[int, ...]
    offset: int
    layer_nbytes: int


def iter_chunks(
    states: Sequence[Tensor], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[tuple[ChunkHeader, memoryview]]:
    """(header, byte view) per chunk, layer by layer, in offset order (an empty tensor: one empty chunk)."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    for layer, tensor in enumerate(states):
        view = tensor_bytes(tensor)
        dtype = wire_dtype(tensor.dtype)
        shape = tuple(int(s) for s in tensor.shape)
        for offset in range(0, max(len(view), 1), chunk_bytes):
            yield (
                ChunkHeader(layer, len(states), dtype, shape, offset, len(view)),
                view[offset : offset + chunk_bytes],
            )


def to_message(
    header: ChunkHeader, data: memoryview | bytes, *, request_id: str = "", specialist: str = ""
) -> pb.StateChunk:
    return pb.StateChunk(
        request_id=request_id,
        specialist=specialist,
        layer=header.layer,
        num_layers=header.num_layers,
        dtype=header.dtype,
        shape=header.shape,
        offset=header.offset,
        layer_nbytes=header.layer_nbytes,
        data=bytes(data),
    )


@dataclass
class WireChunk:
    """A StateChunk's other fields plus its `data` as a view: what the server sends (a view of the state
    tensor) and what the client receives (a view of the received message), each without an extra copy.

    `owned` says that nothing else will read or write the buffer behind `data` (a message gRPC has just
    materialised for this chunk alone). A layer that arrives whole in an owned chunk is then decoded as a tensor
    over that buffer instead of a copy of it, even though the buffer is an immutable `bytes` object: the tensor
    becomes its only user, so writing to the tensor in place is safe.
    """

    message: pb.StateChunk  # every field but data
    data: memoryview
    owned: bool = False


_DATA_FIELD = pb.StateChunk.DATA_FIELD_NUMBER
_DATA_TAG = bytes([(_DATA_FIELD << 3) | 2])  # wire type LEN
_PADDING_TAG = bytes([(pb.StateChunk.PADDING_FIELD_NUMBER << 3) | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise DecodeError("truncated or overlong varint in StateChunk")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def serialize_chunk(chunk: WireChunk | pb.StateChunk) -> bytes:
    """Protobuf wire bytes of the chunk: fields may come in any order, so `data` goes after the rest, preceded
    by `padding` that puts its first byte at a multiple of DATA_ALIGNMENT."""
    if isinstance(chunk, pb.StateChunk):
        return chunk.SerializeToString()
    header = chunk.message.SerializeToString()
    length = _varint(len(chunk.data))
    # padding's tag, its one-byte length and the filler, then data's tag and length, end on the alignment
    fill = -(len(header) + len(_PADDING_TAG) + 1 + len(_DATA_TAG) + len(length)) % DATA_ALIGNMENT
    return b"".join((header, _PADDING_TAG, bytes([fill]), bytes(fill), _DATA_TAG, length, chunk.data))


def parse_chunk(wire: bytes, owned: bool = False) -> WireChunk:
    """Inverse of serialize_chunk for any valid StateChunk encoding: protobuf parses the small fields, while
    `data` stays a view into `wire` (the generic parser would copy it twice). `owned`: see WireChunk."""
    view = memoryview(wire)
    pos, span = 0, None
    while pos < len(view):
        field_start = pos
        key, pos = _read_varint(view, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _read_varint(view, pos)
        elif wire_type == 2:
            length, pos = _read_varint(view, pos)
            if field == _DATA_FIELD:
                if span is not None:
                    raise DecodeError("StateChunk.data appears twice")
                span = (field_start, pos, pos + length)
            pos += length
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise DecodeError(f"unexpected wire type {wire_type} in StateChunk")
    if pos != len(view):
        raise DecodeError("truncated StateChunk")
    if span is None:
        return WireChunk(pb.StateChunk.FromString(wire), memoryview(b""), owned)
    field_start, data_start, data_end = span
    message = pb.StateChunk.FromString(bytes(view[:field_start]) + bytes(view[data_end:]))
    return WireChunk(message, view[data_start:data_end], owned)


def parse_received_chunk(wire: bytes) -> WireChunk:
    """gRPC response deserializer: `wire` is a message gRPC just received, referenced by nothing else."""
    return parse_chunk(wire, owned=True)


class _Layer:
    def __init__(self, chunk: pb.StateChunk, where: str) -> None:
        self.dtype = torch_dtype(chunk.dtype)
        self.shape = tuple(chunk.shape)
        if len(self.shape) != 4:
            raise StateCodecError(f"{where}: shape {list(self.shape)} is not (B, H, K, V)")
        self.itemsize = itemsize = torch.empty((), dtype=self.dtype).element_size()
        expected = int(np.prod(self.shape, dtype=np.int64)) * itemsize
        if chunk.layer_nbytes != expected:
            raise StateCodecError(
                f"{where}: layer_nbytes {chunk.layer_nbytes} but shape {list(self.shape)} of "
                f"{self.dtype} needs {expected}"
            )
        if expected > MAX_LAYER_BYTES:
            raise StateCodecError(
                f"{where}: layer of {expected} bytes exceeds the {MAX_LAYER_BYTES} byte limit"
            )
        self.nbytes = expected
        self.received = 0
        self.flat: Tensor | None = None

    def adopt(self, data: memoryview | bytes) -> None:
        """Take an owned buffer holding the whole layer as the tensor's memory (unless it is misaligned for the
        element type: then copy it)."""
        flat = torch.frombuffer(data, dtype=self.dtype)
        if flat.data_ptr() % flat.element_size():
            self.write(0, data)
        else:
            self.flat = flat
            self.received = self.nbytes

    def write(self, offset: int, data: memoryview | bytes) -> None:
        if self.flat is None:
            # The tensor itself is the reassembly buffer: torch.empty does not zero-fill (every byte is written
            # by a chunk before result() hands it out), and each chunk is copied into it exactly once.
            self.flat = torch.empty(self.nbytes // self.itemsize, dtype=self.dtype)
            self.view = memoryview(self.flat.view(torch.uint8).numpy())  # type: ignore[arg-type]  # as in tensor_bytes
        self.view[offset : offset + len(data)] = data
        self.received = offset + len(data)

    def tensor(self) -> Tensor:
        if self.flat is None:  # an empty layer: no chunk wrote to it
            self.write(0, b"")
        assert self.flat is not None
        flat = self.flat
        if sys.byteorder != "little":
            swapped = flat.view(_DTYPES[wire_dtype(self.dtype)][1]).numpy().byteswap()  # pragma: no cover
            flat = torch.from_numpy(swapped).view(self.dtype)  # pragma: no cover
        return flat.view(self.shape)


class StateAssembler:
    """Reassembles one stream's chunks into per-layer tensors, checking each chunk against its layer."""

    def __init__(self, source: str = "stream") -> None:
        self.source = source
        self.num_layers: int | None = None
        self.layers: list[_Layer] = []
        self.stats: pb.StreamStats | None = None
        self.bytes_received = 0

    def add(self, received: pb.StateChunk | WireChunk) -> None:
        chunk = received.message if isinstance(received, WireChunk) else received
        data = received.data
        owned = isinstance(received, WireChunk) and received.owned
        where = f"{self.source}: layer {chunk.layer} chunk at offset {chunk.offset}"
        if self.stats is not None:
            raise StateCodecError(f"{where}: chunk after the final chunk of the stream")
        if self.num_layers is None:
            if not 0 < chunk.num_layers <= MAX_LAYERS:
                raise StateCodecError(f"{where}: num_layers {chunk.num_layers} outside 1..{MAX_LAYERS}")
            self.num_layers = chunk.num_layers
        elif chunk.num_layers != self.num_layers:
            raise StateCodecError(f"{where}: num_layers changed from {self.num_layers} to {chunk.num_layers}")
        current = len(self.layers) - 1
        if current >= 0 and self.layers[current].received < self.layers[current].nbytes:
            if chunk.layer != current:
                raise StateCodecError(
                    f"{where}: layer {current} is incomplete "
                    f"({self.layers[current].received}/{self.layers[current].nbytes} bytes)"
                )
        elif chunk.layer != current + 1 or chunk.layer >= self.num_layers:
            raise StateCodecError(f"{where}: expected layer {current + 1} of {self.num_layers}")
        else:
            self.layers.append(_Layer(chunk, where))
        layer = self.layers[chunk.layer]
        if torch_dtype(chunk.dtype) != layer.dtype or tuple(chunk.shape) != layer.shape:
            raise StateCodecError(
                f"{where}: dtype/shape {pb.Dtype.Name(chunk.dtype)} {list(chunk.shape)} differ "
                f"from the layer's first chunk ({layer.dtype} {list(layer.shape)})"
            )
        if chunk.layer_nbytes != layer.nbytes:
            raise StateCodecError(f"{where}: layer_nbytes {chunk.layer_nbytes} differs from {layer.nbytes}")
        if chunk.offset != layer.received:
            raise StateCodecError(f"{where}: expected offset {layer.received} (chunks must arrive in order)")
        end = chunk.offset + len(data)
        if end > layer.nbytes:
            raise StateCodecError(f"{where}: {len(data)} bytes overrun the layer's {layer.nbytes} bytes")
        if owned and chunk.offset == 0 and 0 < len(data) == layer.nbytes:
            layer.adopt(data)
        else:
            layer.write(chunk.offset, data)
        self.bytes_received += len(data)
        if chunk.HasField("stats"):
            self.stats = chunk.stats

    def result(self) -> list[Tensor]:
        """The layer tensors; raises StateCodecError if the stream ended early."""
        if self.num_layers is None:
            raise StateCodecError(f"{self.source}: the stream carried no chunks")
        complete = sum(layer.received == layer.nbytes for layer in self.layers)
        if complete != self.num_layers or self.stats is None:
            raise StateCodecError(
                f"{self.source}: stream ended early ({complete}/{self.num_layers} layers complete, "
                f"final chunk {'received' if self.stats is not None else 'missing'})"
            )
        return [layer.tensor() for layer in self.layers]


# ---------------------------------------------------------------------------------------------------------------
# Cell vectors sent with a ColumnsRequest (the annotation server's MiniLM vectors, so specialists need not encode)

# Unit vectors rounded to float16 are within ~1e-3 of length 1; anything further off is not an encoder's output.
_NORM_TOLERANCE = 0.02
_CELL_DTYPES: dict[int, np.dtype[np.floating]] = {pb.DTYPE_FLOAT16: np.dtype("<f2"), pb.DTYPE_FLOAT32: np.dtype("<f4")}


class CellVectorsError(ValueError):
    """A CellVectors message that does not hold unit vectors of the expected encoder and width."""


def cell_texts(text: str) -> list[str]:
    """The texts the column encoder looks up in the cell-vector store for one serialized column: its neighbours'
    values joined, its cells, its cells joined (model_server/model/column_encoder.py;
    tests/grpc/test_grpc_cell_vectors.py checks the two agree)."""
    from swarm.model_server.model.column_encoder import JOIN
    from swarm.model_server.model.text import parse_column

    cells, context = parse_column(text)
    return [*(JOIN.join(values) for values in context), *cells, *([JOIN.join(cells)] if cells else [])]


def columns_cell_texts(texts: Sequence[str]) -> list[str]:
    """The distinct cell texts of several serialized columns, in first-use order."""
    return list(dict.fromkeys(t for text in texts for t in cell_texts(text)))


def cell_vectors_message(keys: Sequence[str], vectors: Tensor, encoder: str, max_bytes: int | None = None
                         ) -> pb.CellVectors:
    """CellVectors of (n, dim) float16 vectors keyed by normalized texts; with `max_bytes`, only the first keys
    whose texts and vectors fit (the receiver encodes the others itself)."""
    if len(keys) != len(vectors):
        raise ValueError(f"{len(keys)} texts for {len(vectors)} vectors")
    dim = int(vectors.shape[1]) if vectors.dim() == 2 else 0
    n = len(keys)
    if max_bytes is not None:
        used, n = 0, 0
        for key in keys:
            used += 2 * dim + len(key.encode("utf-8")) + 4
            if used > max_bytes:
                break
            n += 1
    data = vectors[:n].to(torch.float16).contiguous().numpy().astype("<f2", copy=False).tobytes()
    return pb.CellVectors(encoder=encoder, texts=list(keys[:n]), dim=dim, dtype=pb.DTYPE_FLOAT16, data=data)


def read_cell_vectors(msg: pb.CellVectors, encoder: str, dim: int, max_text_chars: int
                      ) -> tuple[list[str], Tensor]:
    """(keys, float32 (n, dim)) of a received CellVectors; CellVectorsError saying what is wrong otherwise."""
    if not msg.texts and not msg.data:
        return [], torch.zeros(0, dim)
    if msg.encoder != encoder:
        raise CellVectorsError(f"cell vectors of encoder {msg.encoder[:64]!r}; this server reads {encoder!r}")
    if msg.dim != dim:
        raise CellVectorsError(f"cell vectors {msg.dim} wide; the encoder's are {dim}")
    if msg.dtype not in _CELL_DTYPES:
        raise CellVectorsError("cell vectors must be DTYPE_FLOAT16 or DTYPE_FLOAT32")
    element = _CELL_DTYPES[msg.dtype]
    n = len(msg.texts)
    if len(msg.data) != n * dim * element.itemsize:
        raise CellVectorsError(f"{len(msg.data)} bytes of cell vectors for {n} texts x {dim} {element.name}")
    keys = list(msg.texts)
    if any(len(k) > max_text_chars for k in keys):
        raise CellVectorsError(f"a cell-vector text is over {max_text_chars} characters")
    if len(set(keys)) != n:
        raise CellVectorsError("cell-vector texts repeat")
    vectors = torch.from_numpy(np.frombuffer(msg.data, dtype=element).astype(np.float32).reshape(n, dim))
    norms = vectors.norm(dim=1)
    if not bool(torch.isfinite(norms).all()) or bool(((norms - 1).abs() > _NORM_TOLERANCE).any()):
        raise CellVectorsError("cell vectors must be finite unit vectors")
    return keys, vectors
