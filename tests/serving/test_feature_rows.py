"""column_encoder.FeatureRows: a column's features by content, unbounded for training, bounded (least recently used
reused) in serving processes, so that neither memory nor the clients' cell values it is keyed by grow per table."""

from __future__ import annotations

import torch

from swarm.model_server.model.column_encoder import FeatureRows
from swarm.model_server.model.column_features import column_features

CPU = torch.device("cpu")


def _column(i: int) -> list[str]:
    return [f"value {i}", str(i * 7), ""]


def _features(rows: FeatureRows, column: list[str]) -> torch.Tensor:
    (id_,) = rows.ids([column])
    return rows.table(CPU)[-id_ - 1]


def test_ids_are_by_content_and_index_the_features_table() -> None:
    rows = FeatureRows()
    first = rows.ids([_column(1), _column(2), _column(1)])
    assert first[0] == first[2] != first[1] and all(i < 0 for i in first)
    for column in (_column(1), _column(2)):
        torch.testing.assert_close(_features(rows, column), column_features(column))


def test_growing_past_the_buffer_keeps_every_row_and_earlier_tables() -> None:
    rows = FeatureRows()
    rows.ids([_column(0)])
    before = rows.table(CPU)
    ids = rows.ids([_column(i) for i in range(1, 3000)])  # grows the buffer twice
    table = rows.table(CPU)
    assert len(table) == len(rows) == 3000
    for i in (1, 1024, 2999):
        torch.testing.assert_close(table[-ids[i - 1] - 1], column_features(_column(i)))
    torch.testing.assert_close(before[0], column_features(_column(0)))  # handed out before the growth


def test_a_bounded_store_reuses_the_least_recently_used_row() -> None:
    rows = FeatureRows(capacity=3)
    a, b, c = rows.ids([_column(1), _column(2), _column(3)])
    assert rows.ids([_column(1)]) == [a]  # used again: now the most recent
    (d,) = rows.ids([_column(4)])  # full: column 2, the least recently used, gives its row
    assert d == b and len(rows) == 3
    torch.testing.assert_close(rows.table(CPU)[-d - 1], column_features(_column(4)))
    assert rows.ids([_column(1), _column(3)]) == [a, c]  # the others kept their rows
    assert len(rows.table(CPU)) == 3  # memory stays at the capacity
    (again,) = rows.ids([_column(2)])  # back: a row of its own again, with its own features
    torch.testing.assert_close(rows.table(CPU)[-again - 1], column_features(_column(2)))


def test_bounding_a_full_store_forgets_the_oldest_columns() -> None:
    rows = FeatureRows()
    rows.ids([_column(i) for i in range(10)])
    rows.bound(4)
    assert len(rows) == 4
    kept = rows.ids([_column(i) for i in range(6, 10)])
    assert len(set(kept)) == 4 and len(rows) == 4  # the four newest are still there: nothing was evicted for them


def test_rows_grown_by_a_server_under_inference_mode_take_writes_outside_it() -> None:
    """A serving thread (inference_mode) grows the buffer, then training code in the same process adds a column:
    before, the buffer was an inference tensor and the write raised "Inplace update to inference tensor"."""
    store = FeatureRows()
    with torch.inference_mode():
        served = store.ids([["a", "b"]])
    trained = store.ids([["c", "d"]])
    table = store.table(torch.device("cpu"))
    assert not table.is_inference() and len({*served, *trained}) == 2
