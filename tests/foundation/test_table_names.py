"""A table's name is never an input: it begins with the table's Schema.org type (`Book_…`, `Product_…`), which would
leak the answer. Renaming a table must leave every prediction unchanged, in training examples and in serving."""
from __future__ import annotations

import torch

from swarm.model_server.model.tables import Table, load_labels
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
from swarm.trainer.data.columns import build_examples
from swarm.trainer.data.sotab import ColumnRef, Split

COLUMNS = (("Dune", "Emma", "Ulysses"), ("Frank Herbert", "Jane Austen", "James Joyce"), ("1965", "1815", "1922"))


def test_renaming_a_table_changes_no_prediction() -> None:
    annotator = PrimaryAnnotator.untrained([], fusion_mode="gated")
    torch.manual_seed(0)
    results = [annotator.annotate(Table(name, COLUMNS), {}, {}) for name in ("Book_x.json.gz", "Product_y.json.gz")]
    assert results[0].labels == results[1].labels
    assert results[0].confidences == results[1].confidences


def test_renaming_a_table_changes_no_training_text() -> None:
    labels = load_labels()
    def texts(name: str) -> list[str]:
        split = Split("s", {name: Table(name, COLUMNS)}, [ColumnRef(name, 0, "Book/name")])
        return [e.text for e in build_examples([split], labels, thinned_copies=1, seed=3)]
    assert texts("Book_a.json.gz") == texts("Event_b.json.gz")
