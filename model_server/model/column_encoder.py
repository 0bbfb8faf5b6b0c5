"""From serialized columns to the recurrent backbone's input: a short sequence of ids per column.

A serialized column (model_server/model/text.py) holds its own cells and a few values of each neighbouring column. The
backbone reads, in this order:

    [CTX] ctx_1 … ctx_m  [COL] cell_1 … cell_k  joined  features

`ctx_i` is the MiniLM vector of neighbour column i's values joined, `cell_j` of one distinct non-empty cell,
`joined` of the column's cells joined, `features` the column's surface features (model_server/model/column_features.py);
an all-empty column reads `[CTX] … [COL] [EMPTY]`. Context comes first so that the recurrence ends on the column
it labels. Ids: 0 is padding, 1–3 the markers, positive ids above them index the process's cell-vector store,
negative ids its feature rows. The backbone maps each kind through its own projection.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from swarm.model_server.model.cell_vectors import CellVectorStore, store
from swarm.model_server.model.column_features import FEATURES, column_features
from swarm.model_server.model.text import parse_column

PAD, CTX, COL, EMPTY = 0, 1, 2, 3
N_SPECIAL = 4
JOIN = " | "


class FeatureRows:
    """Feature vectors of the columns seen by this process, by content (ids are -(row + 1)).

    Unbounded by default (training encodes its columns once and reads their ids for the whole run). A serving
    process bounds it (`bound`, from the servers): at most `capacity` columns, the least recently used row reused
    for a new column, so that neither its memory nor the clients' cell values it is keyed by grow with every table
    served. A row stays valid until `capacity` other columns have arrived after its last use; the servers bound it
    to SERVING_FEATURE_ROWS, some 25 to 50 times the columns their admission lets be in flight at once. Rows live
    in one buffer grown by doubling: a new column costs its own row, not a copy of every row before it."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._index: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._data = torch.zeros(0, len(FEATURES))
        self._rows = 0
        self._tables: dict[torch.device, Tensor] = {}
        self._lock = threading.Lock()

    def bound(self, capacity: int) -> None:
        """Keep at most `capacity` columns from now on (the oldest go first when it is over already)."""
        with self._lock:
            self.capacity = max(1, capacity)
            while len(self._index) > self.capacity:
                self._index.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def _slot(self) -> int:
        if self.capacity is not None and len(self._index) >= self.capacity:
            return self._index.popitem(last=False)[1]
        if self._rows == len(self._data):
            # A normal tensor even when a server thread grows it under inference_mode: an inference tensor could not
            # take the in-place row writes a later caller outside inference_mode (training) makes.
            with torch.inference_mode(False):
                grown = torch.zeros(max(1024, 2 * len(self._data)), self._data.shape[1])
            grown[: self._rows] = self._data[: self._rows]
            self._data = grown  # tables handed out before keep the old storage, whose rows stay right
        self._rows += 1
        return self._rows - 1

    def ids(self, columns: Sequence[Sequence[str]]) -> list[int]:
        with self._lock:
            out = []
            for cells in columns:
                key = tuple(cells)
                row = self._index.get(key)
                if row is None:
                    row = self._slot()
                    self._data[row] = column_features(cells)
                    self._index[key] = row
                    self._tables.clear()
                else:
                    self._index.move_to_end(key)
                out.append(-(row + 1))
            return out

    def table(self, device: torch.device) -> Tensor:
        with self._lock:
            rows = self._data[: self._rows]
            if device.type == "cpu":
                return rows
            if device not in self._tables:
                self._tables[device] = rows.to(device)
            return self._tables[device]


SERVING_FEATURE_ROWS = 200_000  # columns a serving process keeps features of (38 floats each: ~30 MB)
_features = FeatureRows()


def feature_rows() -> FeatureRows:
    return _features


class ColumnEncoder:
    """Serialized columns → (ids (B, T), mask (B, T)), padded on the right to the longest column."""

    def __init__(self, max_len: int = 64, cells: CellVectorStore | None = None, features: bool = True) -> None:
        self.max_len = max_len
        self._cells = cells
        self.features = features  # False only for the accuracy experiment's ablation

    @property
    def cells(self) -> CellVectorStore:
        return self._cells if self._cells is not None else store()

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        if not texts:
            raise ValueError("cannot encode an empty batch of columns")
        parsed = [parse_column(t) for t in texts]
        segments: list[str] = []  # every text to look up in the cell store, in order of use
        layouts: list[list[int | str]] = []  # per column: marker ids, or "" where the next segment goes
        for cells, context in parsed:
            layout: list[int | str] = [CTX]
            for values in context:
                layout.append("")
                segments.append(JOIN.join(values))
            layout.append(COL)
            if cells:
                layout += [""] * (len(cells) + 1)
                segments += [*cells, JOIN.join(cells)]
            else:
                layout.append(EMPTY)
            layouts.append(layout)
        cell_ids = iter(self.cells.ids(segments))
        feature_ids = _features.ids([cells for cells, _ in parsed])
        rows = []
        for layout, feature_id in zip(layouts, feature_ids, strict=True):
            row = [item if isinstance(item, int) else next(cell_ids) + N_SPECIAL for item in layout]
            rows.append([*row[: self.max_len - 1], feature_id] if self.features else row[: self.max_len])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask
