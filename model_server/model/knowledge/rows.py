"""Knowledge vectors by cell-vector row: what a specialist's backbone adds to each cell token it reads.

The column encoder turns every cell into a row id of the process's cell-vector store
(model_server/model/cell_vectors.py); `KnowledgeRows(sources).rows(ids)` gives the concatenated knowledge vectors of the
sources for those rows, computing each row once, on first use, from the store's text of it. Training, evaluation and
serving all read cells this way, so a specialist sees the same knowledge wherever it runs. Rows a serving store evicts
(and will reuse for other texts) are forgotten here too.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from swarm.model_server.model.knowledge.cache import vectors
from swarm.model_server.model.knowledge.registry import SOURCES

if TYPE_CHECKING:
    from swarm.model_server.model.cell_vectors import CellVectorStore


def knowledge_dim(sources: Sequence[str]) -> int:
    """Length of the concatenated vector of these sources; a clear error for a name that is not a source."""
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown knowledge source(s) {unknown}; known: {sorted(SOURCES)}")
    return sum(len(SOURCES[name].features) for name in sources)


class KnowledgeRows:
    """Row id of the cell-vector store → knowledge vector (float32, `dim` wide), computed once per row."""

    def __init__(self, sources: Sequence[str], cells: CellVectorStore | None = None) -> None:
        from swarm.model_server.model.cell_vectors import store

        self.sources = tuple(sources)
        self._cells = cells if cells is not None else store()
        self.dim = knowledge_dim(self.sources)
        # numpy, not torch: rows are filled in whichever torch mode asks first (inference during evaluation, grad
        # during training), and an inference-mode tensor cannot be updated in place outside inference mode.
        self._table = np.zeros((0, self.dim), dtype=np.float32)
        self._known = np.zeros(0, dtype=bool)
        self._lock = threading.Lock()
        # Distinct rows asked for per call, summed, and rows computed from the sources: the cache's hit rate.
        self.looked_up = 0
        self.computed = 0
        # A serving store evicts and reuses rows: a reused row's facts must be computed again from its new text.
        self._cells.on_evict(self._forget)

    def _forget(self, rows: list[int]) -> None:
        with self._lock:
            known = [r for r in rows if r < len(self._known)]
            self._known[known] = False

    def rows(self, ids: Tensor) -> Tensor:
        """(*ids.shape, dim) on the host for row ids of the cell-vector store (default: the process's)."""
        flat = ids.reshape(-1).cpu().numpy()
        with self._lock:
            needed = int(flat.max()) + 1 if flat.size else 0
            if needed > len(self._known):
                grow = max(needed, 2 * len(self._known)) - len(self._known)
                self._table = np.concatenate([self._table, np.zeros((grow, self.dim), dtype=np.float32)])
                self._known = np.concatenate([self._known, np.zeros(grow, dtype=bool)])
            unique = np.unique(flat)
            missing = unique[~self._known[unique]]
            self.looked_up += len(unique)
            self.computed += len(missing)
            if len(missing):
                texts = self._cells.texts(missing.tolist())
                self._table[missing] = torch.cat([vectors(name, texts) for name in self.sources], dim=1).numpy()
                self._known[missing] = True
            found = self._table[flat]
        return torch.from_numpy(found).reshape(*ids.shape, self.dim)


@functools.cache
def knowledge_rows(sources: tuple[str, ...]) -> KnowledgeRows:
    """The process's one table per tuple of sources (every model reading the same sources shares it)."""
    return KnowledgeRows(sources)
