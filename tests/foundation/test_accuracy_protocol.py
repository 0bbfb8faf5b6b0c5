"""The accuracy experiment's protocol: grouped folds keep a table's columns together, and a dataset without the
splits it needs is refused clearly before any training."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sotab_fixtures import write_fixture_split

from swarm.trainer.accuracy_experiment import grouped_folds
from swarm.trainer.columns import ColumnExample


def test_grouped_folds_keep_each_table_in_one_fold_and_cover_every_column() -> None:
    examples = [ColumnExample("{}", 0, f"T{t}", c) for t in range(17) for c in range(1 + t % 4)]
    folds = grouped_folds(examples, 5, seed=3)
    assert sorted(i for fold in folds for i in fold) == list(range(len(examples)))
    owner = {examples[i].table: k for k, fold in enumerate(folds) for i in fold}
    assert all(owner[examples[i].table] == k for k, fold in enumerate(folds) for i in fold)
    assert max(map(len, folds)) - min(map(len, folds)) <= 4  # balanced by column count (largest table: 4)
    assert grouped_folds(examples, 5, seed=3) == folds


def test_accuracy_report_without_a_validation_split_is_a_clear_error(tmp_path: Path) -> None:
    write_fixture_split(tmp_path, "training", 4, seed=1)
    done = subprocess.run([sys.executable, "-m", "swarm.trainer.cli", "accuracy-report", "--data", str(tmp_path),
                           "--run-dir", str(tmp_path / "run"), "--reports-dir", str(tmp_path / "reports"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "need 'validation'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()
