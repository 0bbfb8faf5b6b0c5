"""Tests of the synthetic SOTAB table generator (`swarm.trainer.data.synth`)."""
from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

import pytest

from swarm.model_server.model.tables import Table, load_labels
from swarm.trainer.data.sotab import ColumnRef, load_split
from swarm.trainer.data.synth import GT_NAME, generate, table_stats, write_synthetic


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Table], list[ColumnRef]]:
    return generate(400, seed=2024)


def test_same_seed_same_output_and_different_seed_differs() -> None:
    assert generate(40, seed=3) == generate(40, seed=3)
    assert generate(40, seed=3) != generate(40, seed=4)


def test_written_split_is_reproducible(tmp_path: Path) -> None:
    first = write_synthetic(tmp_path / "a", n_tables=20, seed=9)
    second = write_synthetic(tmp_path / "b", n_tables=20, seed=9)
    assert (first / GT_NAME).read_bytes() == (second / GT_NAME).read_bytes()
    for path in sorted((first / "tables").iterdir()):
        # Compare decompressed bytes: the gzip header carries a write timestamp.
        twin = second / "tables" / path.name
        assert gzip.decompress(path.read_bytes()) == gzip.decompress(twin.read_bytes())


def test_round_trip_through_split_files(tmp_path: Path) -> None:
    tables, refs = generate(50, seed=11)
    split = load_split(write_synthetic(tmp_path / "synthetic", n_tables=50, seed=11))
    assert split.columns == refs
    assert split.tables == {t.name: t for t in tables}


def test_every_label_is_produced(corpus: tuple[list[Table], list[ColumnRef]]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for ref in corpus[1]:
        counts[str(ref.label)] += 1
    labels = load_labels()
    assert set(counts) == set(labels)
    assert min(counts.values()) >= 5, sorted(counts.items(), key=lambda kv: kv[1])[:5]


def test_shape_matches_real_sotab_statistics() -> None:
    stats = table_stats(generate(600, seed=5)[0])
    assert stats["mean_columns"] == pytest.approx(8, abs=1)
    assert stats["median_columns"] == pytest.approx(7, abs=1)
    assert stats["median_rows"] == pytest.approx(33, abs=6)
    assert stats["empty_cell_share"] == pytest.approx(0.08, abs=0.03)
    assert stats["non_numeric_column_share"] == pytest.approx(0.85, abs=0.04)


def test_ambiguous_values_appear_under_several_labels(corpus: tuple[list[Table], list[ColumnRef]]) -> None:
    tables = {t.name: t for t in corpus[0]}
    labels_of: dict[str, set[str]] = defaultdict(set)
    for ref in corpus[1]:
        for value in tables[ref.table].columns[ref.column]:
            labels_of[value].add(str(ref.label))
    for value in ("Washington", "Georgia", "Jordan", "Paris"):
        assert len(labels_of[value]) >= 2, (value, labels_of[value])


def test_output_is_well_formed(corpus: tuple[list[Table], list[ColumnRef]]) -> None:
    tables, refs = corpus
    by_name = {t.name: t for t in tables}
    assert len(by_name) == len(tables), "table names must be unique"
    known = set(load_labels())
    for table in tables:
        assert table.columns and len({len(col) for col in table.columns}) == 1
        assert all(any(col) for col in table.columns), f"{table.name} has an all-empty column"
    for ref in refs:
        assert ref.label in known
        assert 0 <= ref.column < len(by_name[ref.table].columns)
    assert len(set(refs)) == len(refs)
    assert len(refs) < sum(len(t.columns) for t in tables), "some context columns stay unlabelled"


def test_label_subset_restricts_ground_truth() -> None:
    _, refs = generate(30, seed=1, labels=["BookFormatType", "Date"])
    assert refs and {r.label for r in refs} <= {"BookFormatType", "Date"}
    with pytest.raises(ValueError, match="unknown"):
        generate(1, seed=1, labels=["NotALabel"])


def test_table_stats_on_a_small_table() -> None:
    table = Table("t", (("1", "2", ""), ("a", "b", "c"), ("3,5", "x", "4")))
    stats = table_stats([table])
    assert stats["median_rows"] == 3 and stats["mean_columns"] == 3
    assert stats["empty_cell_share"] == pytest.approx(1 / 9)
    assert stats["non_numeric_column_share"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_output_does_not_depend_on_the_process_hash_seed() -> None:
    """Same seed, separate processes with different PYTHONHASHSEED: identical tables (set order must not leak)."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from swarm.trainer.data.synth import generate; t, r = generate(150, 3); "
            "print(hashlib.md5(repr(([x.columns for x in t], r)).encode()).hexdigest())")
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1, digests
