"""`swarm fusion-report` at toy scale: every fusion row over seeds, each seed's saved model re-scoring as reported."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from swarm.model_server.model.specialist import domains
from swarm.trainer.experiments.fusion import FusionExperimentConfig, run_fusion_experiment
from swarm.trainer.training.evaluate import evaluate_dir


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fusion_report_gives_every_row_over_seeds(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = FusionExperimentConfig(data=tiny_dataset, run_dir=tmp_path / "run", reports_dir=tmp_path / "reports",
                                 synthetic_tables=30, pretrain_steps=3, specialist_steps=2, primary_steps=3,
                                 modes=("gated", "weighted_sum"), sizes=(1, 0), primary_seeds=(0, 1))
    run_fusion_experiment(cfg)

    fusion = json.loads((cfg.reports_dir / "fusion.json").read_text())
    every = len(domains())
    assert [(r["specialists"], r["fusion"]) for r in fusion["rows"]] == [
        (0, None), (1, "gated"), (every, "gated"), (1, "weighted_sum"), (every, "weighted_sum")]
    assert fusion["primary"]["macro_f1"] == fusion["rows"][0]["macro_f1"]
    for row in fusion["rows"] + fusion["references"]:
        assert set(row) >= {"specialists", "fusion", "micro_f1", "macro_f1", "hard_class_f1"}
        assert [s["seed"] for s in row["seeds"]] == [0, 1]
        assert row["macro_f1"] == pytest.approx(statistics.fmean(s["macro_f1"] for s in row["seeds"]))
    # Every seed's saved model re-scores to what the table says (here: the fused rows, through their specialists).
    for row in fusion["rows"][1:3]:
        for run in row["seeds"]:
            rescored = evaluate_dir(cfg.run_dir / run["model_dir"], tiny_dataset, "validation")
            assert rescored.micro_f1 == pytest.approx(run["micro_f1"])
    assert [r["primary_init"] for r in fusion["references"]] == ["pre-trained", "pre-trained"]
    assert fusion["references"][1]["specialists"] == every
    assert len(fusion["in_domain"]) >= 1 and (cfg.reports_dir / "fusion.png").stat().st_size > 0
