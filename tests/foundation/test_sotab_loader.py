"""The SOTAB loader reads valid data and rejects malformed data with the file and row named."""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest
from sotab_fixtures import REAL_DATA, write_fixture_split

from swarm.model_server.model.tables import DataError, load_labels
from swarm.trainer.data.sotab import load_dataset, load_split, read_table


def _write_raw_table(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def _split_with(tmp_path: Path, table_lines: list[str], gt_rows: list[str]) -> Path:
    split = tmp_path / "s"
    _write_raw_table(split / "tables" / "t.json.gz", table_lines)
    (split / "gt.csv").write_text("table_name,column_index,label\n" + "\n".join(gt_rows) + "\n")
    return split


def test_round_trip_and_dataset(tiny_dataset: Path) -> None:
    splits = load_dataset(tiny_dataset)
    assert sorted(splits) == ["training", "validation"]
    train = splits["training"]
    assert len(train.tables) == 24 and len(train.columns) == 72
    assert Counter(ref.label for ref in train.columns) == {"addressLocality": 24, "Date": 24, "telephone": 24}
    table = next(iter(train.tables.values()))
    assert table.n_rows == 5 and len(table.columns) == 3


def test_missing_cells_and_ragged_rows_become_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    _write_raw_table(path, ['{"0": "a", "2": "c"}', '{"1": 5, "0": null}'])
    table = read_table(path)
    assert table.columns == (("a", ""), ("", "5"), ("c", ""))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"0": "a"}', "{not json"], "row 2 is not valid JSON"),
        (['["a", "b"]'], "row 1 is list"),
        (['{"zero": "a"}'], "row 1 has key 'zero'"),
        ([""], "table has no cells"),
    ],
)
def test_malformed_table_names_file_and_row(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.json.gz"
    _write_raw_table(path, lines)
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert "bad.json.gz" in str(info.value)


def test_not_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.json.gz"
    path.write_text('{"0": "a"}\n')
    with pytest.raises(DataError, match="plain.json.gz"):
        read_table(path)


@pytest.mark.parametrize(
    ("gt_rows", "message"),
    [
        (["t.json.gz,0,NotALabel"], "row 2: unknown label 'NotALabel'"),
        (["t.json.gz,0,Date", "t.json.gz,7,Date"], "row 3: column_index 7 but t.json.gz has 2 columns"),
        (["t.json.gz,x,Date"], "row 2: column_index 'x'"),
        (["missing.json.gz,0,Date"], "row 2: table file"),
        (["t.json.gz,0"], "row 2 has 2 fields"),
    ],
)
def test_bad_ground_truth_names_row(tmp_path: Path, gt_rows: list[str], message: str) -> None:
    split = _split_with(tmp_path, ['{"0": "2020-01-01", "1": "x"}'], gt_rows)
    with pytest.raises(DataError, match=message):
        load_split(split, load_labels())


def test_bad_header(tmp_path: Path) -> None:
    split = tmp_path / "s"
    _write_raw_table(split / "tables" / "t.json.gz", ['{"0": "a"}'])
    (split / "gt.csv").write_text("table,col,label\nt.json.gz,0,Date\n")
    with pytest.raises(DataError, match="header"):
        load_split(split, load_labels())


def test_missing_directory_and_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    write_fixture_split(tmp_path, "training", 2, seed=0)
    with pytest.raises(DataError, match="missing split"):
        load_dataset(tmp_path, splits=["validation"])


def test_packaged_labels_are_the_82_sotab_labels() -> None:
    labels = load_labels()
    assert len(labels) == 82 and "addressLocality" in labels and "Person/name" in labels


def test_real_sample_loads() -> None:
    splits = load_dataset(REAL_DATA)
    assert {"training", "training_columns", "validation"} <= set(splits)
    assert len(splits["validation"].columns) == 753
    assert len({ref.label for ref in splits["training_columns"].columns if ref.label is not None}) == 82


def test_a_predictions_csv_beside_the_splits_or_the_ground_truth_is_not_data(tiny_dataset: Path) -> None:
    """`swarm annotate --out` writes table_name,column_index,label,confidence,...: its header starts like the
    ground truth's, and the loader must still find the dataset's splits and each split's own CSV."""
    predictions = "table_name,column_index,label,confidence,specialists,deep_steps\nt,0,Date,0.9,,0\n"
    (tiny_dataset / "pred.csv").write_text(predictions, encoding="utf-8")
    (tiny_dataset / "validation" / "pred.csv").write_text(predictions, encoding="utf-8")
    splits = load_dataset(tiny_dataset)
    assert sorted(splits) == ["training", "validation"]
    assert len(splits["validation"].columns) == len(load_dataset(tiny_dataset / "validation")["validation"].columns)
