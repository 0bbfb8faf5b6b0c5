"""From SOTAB splits to labelled training examples: each annotated column's serialized text (the serving path's
`serialize_table`, so a column reads the same in training and in serving) with its label index."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from swarm.model_server.tables import serialize_table
from swarm.trainer.sotab import Split


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
