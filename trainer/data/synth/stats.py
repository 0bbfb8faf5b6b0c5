"""Shape statistics of tables (`table_stats`), for synthetic and real splits alike, so both can be compared."""
from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from swarm.model_server.model.tables import Table

_NUMERIC = re.compile(r"[+-]?(\d+([.,]\d+)?|[.,]\d+)([eE][+-]?\d+)?")


@dataclass
class _Counts:
    columns: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cells: int = 0
    empty: int = 0
    numeric_columns: int = 0


def table_stats(tables: Iterable[Table]) -> dict[str, float]:
    """Shape statistics of tables: columns per table, rows, empty-cell share and non-numeric column share.

    A column is numeric when most of its non-empty cells are plain numbers (decimal point or comma allowed).
    """
    counts = _Counts()
    for table in tables:
        counts.columns.append(len(table.columns))
        counts.rows.append(table.n_rows)
        for col in table.columns:
            filled = [v.strip() for v in col if v.strip()]
            counts.cells += len(col)
            counts.empty += len(col) - len(filled)
            if filled and sum(bool(_NUMERIC.fullmatch(v)) for v in filled) * 2 > len(filled):
                counts.numeric_columns += 1
    if not counts.columns:
        raise ValueError("table_stats needs at least one table")
    n_columns = sum(counts.columns)
    return {
        "tables": len(counts.columns),
        "mean_columns": statistics.fmean(counts.columns),
        "median_columns": statistics.median(counts.columns),
        "median_rows": statistics.median(counts.rows),
        "mean_rows": statistics.fmean(counts.rows),
        "empty_cell_share": counts.empty / max(1, counts.cells),
        "non_numeric_column_share": 1 - counts.numeric_columns / max(1, n_columns),
    }
