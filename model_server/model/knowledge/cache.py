"""A per-distinct-cell cache of knowledge vectors, and the batch API the specialists call.

Keys are the cell's normalized text (`swarm.model_server.model.cell_vectors.normalize`: whitespace collapsed, clipped to
what the encoder reads), so a cell costs its source once and every repeat one dict lookup. Each source has its own
LRU, capped at `max_entries` (vectors are stored as packed float32 arrays: 64 + 4·dim bytes each).
"""
from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swarm.model_server.model.cell_vectors import normalize
from swarm.model_server.model.knowledge.base import KnowledgeSource

DEFAULT_MAX_ENTRIES = 200_000


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class KnowledgeCache:
    """Normalized cell text → packed vector, one LRU per source; thread-safe."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: dict[str, OrderedDict[str, array]] = {}
        self.stats: dict[str, CacheStats] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())

    def entries(self, source_name: str) -> int:
        return len(self._entries.get(source_name, ()))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.stats.clear()

    def vector(self, source: KnowledgeSource, cell: str) -> array:
        key = normalize(cell)
        with self._lock:
            lru = self._entries.setdefault(source.name, OrderedDict())
            stats = self.stats.setdefault(source.name, CacheStats())
            found = lru.get(key)
            if found is not None:
                lru.move_to_end(key)
                stats.hits += 1
                return found
            stats.misses += 1
        values = array("f", source.vector(key))
        if len(values) != len(source.features):
            raise ValueError(f"{source.name}: vector of length {len(values)}, {len(source.features)} features")
        with self._lock:
            lru[key] = values
            while len(lru) > self.max_entries:
                lru.popitem(last=False)
        return values

    def vectors(self, source: KnowledgeSource, cells: Sequence[str]) -> torch.Tensor:
        """(len(cells), len(source.features)) float32; each distinct cell computed once."""
        dim = len(source.features)
        if not cells:
            return torch.zeros((0, dim), dtype=torch.float32)
        packed = bytearray().join(self.vector(source, c).tobytes() for c in cells)
        return torch.frombuffer(packed, dtype=torch.float32).view(len(cells), dim)


DEFAULT_CACHE = KnowledgeCache()


def vectors(source: KnowledgeSource | str, cells: Sequence[str], cache: KnowledgeCache | None = None) -> torch.Tensor:
    """The knowledge vectors of `cells` from `source` (an instance or a name in the registry)."""
    if isinstance(source, str):
        from swarm.model_server.model.knowledge.registry import SOURCES

        source = SOURCES[source]
    return (cache or DEFAULT_CACHE).vectors(source, cells)
