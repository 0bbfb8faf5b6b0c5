"""Tables as the serving path and training both see them: the column-major `Table`, its serialization into one
text per column (with neighbour-column context), and the 82-label SOTAB v2 vocabulary.

The same function serializes columns for training, evaluation, the annotation API and the specialists' requests,
so a column reads the same everywhere. Loading SOTAB files from disk is training-side (`swarm.trainer.data.sotab`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm.model_server.model.text import CONTEXT_VALUES, MAX_CONTEXT_COLUMNS, serialize_column

_PACKAGED_LABELS = Path(__file__).parents[1] / "sotab_labels.txt"  # swarm/model_server/sotab_labels.txt, package data


class DataError(ValueError):
    """A table or ground-truth file that is not valid SOTAB CTA data."""


@dataclass(frozen=True)
class Table:
    """A web table, column-major: `columns[j][i]` is the cell of row i in column j ("" when missing)."""

    name: str
    columns: tuple[tuple[str, ...], ...]

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def n_rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0


def load_labels(path: Path | None = None) -> list[str]:
    """The label vocabulary: `path` if given, else the 82 SOTAB v2 CTA labels shipped with the package."""
    source = path or _PACKAGED_LABELS
    labels = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(labels)) != len(labels):
        raise DataError(f"{source}: duplicate labels")
    return labels




def _neighbours(j: int, width: int) -> list[int]:
    order = []
    for d in range(1, width):
        order += [i for i in (j - d, j + d) if 0 <= i < width]
        if len(order) >= MAX_CONTEXT_COLUMNS:
            break
    return order[:MAX_CONTEXT_COLUMNS]


def serialize_table(table: Table) -> list[str]:
    """One text per column: its own values, then up to 3 non-empty values of each of its 4 nearest columns."""
    texts = []
    for j, values in enumerate(table.columns):
        context = [[v for v in table.columns[i] if v.strip()][:CONTEXT_VALUES]
                   for i in _neighbours(j, len(table.columns))]
        texts.append(serialize_column(values, context))
    return texts
