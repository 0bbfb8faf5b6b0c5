"""The accuracy experiment's protocol: grouped folds keep a table's columns together, validation columns of the
other folds join training and the held-out ones never do, the specialists are withheld from the columns they were
trained on, a dataset without the splits it needs is refused clearly, and the whole report runs end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sotab_fixtures import write_domain_split, write_fixture_split

from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import domains, untrained
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.text import serialize_column
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.experiments import runner as experiment_runner
from swarm.trainer.experiments.accuracy import CONFUSION_GROUPS, AccuracyConfig, run_accuracy
from swarm.trainer.experiments.runner import ExperimentRunner, cv_folds, grouped_folds


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
    done = subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", "accuracy-report",
                           "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                           "--reports-dir", str(tmp_path / "reports"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "need 'validation'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()


def test_cv_folds_repeat_the_other_folds_validation_columns_and_never_the_held_out_ones() -> None:
    base = [ColumnExample("{}", 0, "train", c) for c in range(3)]
    val = [ColumnExample("{}", 1, f"V{t}", c) for t in range(6) for c in range(2)]
    folds = grouped_folds(val, 3, seed=0)
    for (train, held), fold in zip(cv_folds(base, val, folds, copies=3), folds, strict=True):
        assert held == [val[i] for i in fold]
        held_tables = {e.table for e in held}
        assert not held_tables & {e.table for e in train}
        assert train[:3] == base and len(train) == 3 + 3 * (len(val) - len(fold))


def test_honest_fusion_withholds_the_specialists_from_their_own_training_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AccuracyConfig(data=tmp_path, model="tiny", steps=1, batch_size=4, device="cpu")
    runner = ExperimentRunner(cfg, load_labels())
    runner.specialists = [untrained("geographic")]
    runner.specialist_tables = {"seen"}
    examples = [ColumnExample(serialize_column(["Berlin", "Paris"]), 0, table, 0) for table in ("seen", "new")]
    seen: list[dict] = []
    original = experiment_runner.train

    def spy(model, data, train_cfg, run_dir, meta, extra, desc):  # noqa: ANN001, ANN202
        seen.append(extra([0, 1]))
        assert meta["honest_fusion"] is True
        return original(model, data, train_cfg, run_dir, meta, extra, desc)

    monkeypatch.setattr(experiment_runner, "train", spy)
    runner.fit("honest", examples, 0, fused=True, honest=True)
    assert seen[0]["row_mask"].tolist() == [False, True]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_accuracy_report_runs_end_to_end_and_names_the_released_swarm(tmp_path: Path) -> None:
    data, reports_dir = tmp_path / "data", tmp_path / "reports"
    write_domain_split(data, "training", 6, seed=1)
    write_domain_split(data, "validation", 6, seed=2)
    cfg = AccuracyConfig(data=data, run_dir=tmp_path / "run", reports_dir=reports_dir, steps=3, specialist_steps=2,
                         batch_size=8, folds=2, seeds=2, device="cpu")
    result = run_accuracy(cfg)
    saved = json.loads((reports_dir / "accuracy.json").read_text())
    assert saved["cv"]["primary_alone"]["micro_f1_std"] is not None and saved["folds"] == 2
    assert len(saved["cv"]["runs"]) == len(saved["cv"]["swarm_gain_per_fold"]) == 4
    assert [r["protocol"] for r in saved["ablation"]] == ["holdout"] * 4 + ["cv"] * 5
    assert set(saved["confusions"]["swarm"]) == {" / ".join(g) for g in CONFUSION_GROUPS}
    metrics = json.loads((reports_dir / "metrics.json").read_text())
    assert metrics["checkpoint"] == result["checkpoint"] == str(tmp_path / "run" / "released" / "model")
    model, manifest = PrimaryModel.load(Path(metrics["checkpoint"]))
    assert manifest.honest_fusion is True and model.specialists == list(domains())
    assert (reports_dir / "accuracy.png").stat().st_size > 0
    markdown = (reports_dir / "accuracy.md").read_text()
    assert "Per-class F1" in markdown and "Criterion (a)" in markdown
    # Each specialist alone, over the same runs, and where its help lands.
    assert set(saved["cv"]["single"]) == set(domains()) == set(saved["specialists"])
    assert all(len(row["per_run"]) == 4 for row in saved["cv"]["single"].values())
    assert saved["cv"]["criterion_a"]["best_single"] in domains()
    assert len(saved["cv"]["criterion_a"]["per_run"]) == 4
    assert [h["name"] for h in saved["specialist_help"]] == list(domains())
    for h in saved["specialist_help"]:
        assert 0.0 <= h["domain_share_of_columns"] <= 1.0 and h["own_domain_goal"] <= 0.5
