"""From SOTAB tables to model inputs: every column serialized with its neighbour-column context.

The same function serializes columns for training, evaluation, the annotation API and the specialists' requests,
so a column reads the same everywhere.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from swarm.model_server.text import serialize_column
from swarm.trainer.sotab import Split, Table

CONTEXT_COLUMNS = 4


def _neighbours(j: int, width: int) -> list[int]:
    order = []
    for d in range(1, width):
        order += [i for i in (j - d, j + d) if 0 <= i < width]
        if len(order) >= CONTEXT_COLUMNS:
            break
    return order[:CONTEXT_COLUMNS]


def serialize_table(table: Table) -> list[str]:
    """One text per column: its own values, then the first non-empty value of up to 4 nearest columns."""
    texts = []
    for j, values in enumerate(table.columns):
        context = [next((v for v in table.columns[i] if v.strip()), "") for i in _neighbours(j, len(table.columns))]
        texts.append(serialize_column(values, context))
    return texts


@dataclass(frozen=True)
class ColumnExample:
    text: str
    label: int
    table: str
    column: int


def build_examples(splits: Sequence[Split], labels: Sequence[str]) -> list[ColumnExample]:
    """Labelled column examples of the given splits (label indices into `labels`)."""
    index = {label: i for i, label in enumerate(labels)}
    examples = []
    for split in splits:
        texts = {name: serialize_table(table) for name, table in split.tables.items()}
        for ref in split.columns:
            if ref.label is None:
                continue
            examples.append(ColumnExample(texts[ref.table][ref.column], index[ref.label], ref.table, ref.column))
    return examples
