"""From SOTAB splits to labelled training examples: each annotated column's serialized text (the serving path's
`serialize_table`, so a column reads the same in training and in serving) with its label index."""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from swarm.model_server.model.tables import Table, serialize_table
from swarm.trainer.data.sotab import Split


@dataclass(frozen=True)
class ColumnExample:
    text: str
    label: int
    table: str
    column: int


def build_examples(splits: Sequence[Split], labels: Sequence[str], thinned_copies: int = 0, seed: int = 0,
                   context: bool = True) -> list[ColumnExample]:
    """Labelled column examples of the given splits (label indices into `labels`).

    `thinned_copies` adds that many copies of each column read from a table cut down to a random few of its columns
    (the column itself always kept), as evaluation tables are cut to about their labelled columns: training then
    sees the thin neighbour context that evaluation will. `context=False` reads every column alone (an ablation).
    """
    index = {label: i for i, label in enumerate(labels)}
    rng = random.Random(seed)
    examples = []
    for split in splits:
        texts = {name: serialize_table(table) if context else
                 [serialize_table(Table(name, (column,)))[0] for column in table.columns]
                 for name, table in split.tables.items()}
        for ref in split.columns:
            if ref.label is None:
                continue
            examples.append(ColumnExample(texts[ref.table][ref.column], index[ref.label], ref.table, ref.column))
            table = split.tables[ref.table]
            for _ in range(thinned_copies if table.n_columns > 1 else 0):
                others = [j for j in range(table.n_columns) if j != ref.column]
                kept = sorted([ref.column, *rng.sample(others, rng.randint(0, min(3, len(others))))])
                thin = Table(table.name, tuple(table.columns[j] for j in kept))
                examples.append(ColumnExample(serialize_table(thin)[kept.index(ref.column)], index[ref.label],
                                              ref.table, ref.column))
    return examples
