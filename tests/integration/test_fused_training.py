"""Fused primaries end to end: training with local and remote (gRPC) specialists, evaluation, annotation."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import untrained
from swarm.model_server.model.tables import load_labels
from swarm.model_server.serving.launcher import start_local_swarm

SPECIALISTS = ["temporal", "geographic"]


def _swarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def specialist_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("specialists")
    for i, name in enumerate(SPECIALISTS):
        untrained(name, seed=i).save(root / name)
    return [root / name for name in SPECIALISTS]


def test_fused_primary_starts_as_the_primary_alone() -> None:
    torch.manual_seed(0)
    alone = PrimaryModel(get_config("tiny"), load_labels()).eval()
    fused = PrimaryModel(get_config("tiny"), load_labels(), "gated", SPECIALISTS).eval()
    fused.load_state_dict(alone.state_dict(), strict=False)
    ids, mask = ColumnEncoder(32)(["Berlin | Paris", "2020-01-01"])
    cfg = fused.cfg
    states = [torch.randn(2, 2, cfg.n_heads, cfg.head_k, cfg.head_v) for _ in range(cfg.n_layers)]
    torch.testing.assert_close(fused(ids, mask, states, [0, 1]), alone(ids, mask))
    fused.state_scale.data.fill_(1.0)
    assert not torch.allclose(fused(ids, mask, states, [0, 1]), alone(ids, mask))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_eval_annotate_with_local_specialists(tiny_dataset: Path, tmp_path: Path,
                                                    specialist_dirs: list[Path]) -> None:
    run = tmp_path / "run"
    dirs = [a for d in specialist_dirs for a in ("--specialist-dir", str(d))]
    trained = _swarm("train", "--data", str(tiny_dataset), "--run-dir", str(run), "--model", "tiny", "--steps", "8",
                     "--batch-size", "8", "--fusion", "weighted_sum", *dirs, "--reports-dir", str(tmp_path / "rep"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["specialists"] == SPECIALISTS and meta["fusion_mode"] == "weighted_sum"
    assert [(run / "model" / rel).resolve() for rel in meta["specialist_dirs"]] == specialist_dirs
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())

    evaluated = _swarm("eval", "--data", str(tiny_dataset), "--checkpoint", str(run / "model"),
                       "--json", str(tmp_path / "eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    # Evaluation reloads the specialists from their directories and reproduces the training run's score.
    assert json.loads((tmp_path / "eval.json").read_text())["micro_f1"] == pytest.approx(metrics["micro_f1"])

    # Annotation goes through the gRPC API with the specialists as processes, and scores the same.
    out = tmp_path / "pred.csv"
    annotated = _swarm("annotate", "--data", str(tiny_dataset / "validation"), "--checkpoint", str(run / "model"),
                       "--out", str(out), "--json", str(tmp_path / "summary.json"))
    assert annotated.returncode == 0, annotated.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8 * 3 and {r["label"] for r in rows} <= set(load_labels())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["specialists_used"] == sorted(SPECIALISTS) and summary["critical_steps_max"] == 2
    assert summary["micro_f1"] == pytest.approx(metrics["micro_f1"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_and_eval_with_remote_specialists_over_grpc(tiny_dataset: Path, tmp_path: Path,
                                                          specialist_dirs: list[Path]) -> None:
    model_dir = tmp_path / "run" / "model"
    with start_local_swarm(specialist_dirs, with_annotation=False, torch_threads=1) as swarm:
        env = {**os.environ,
               "SWARM_SPECIALIST_ENDPOINTS": ",".join(f"{n}={a}" for n, a in swarm.addresses.items())}
        trained = subprocess.run(
            [sys.executable, "-m", "swarm.trainer.commands.cli", "train", "--data", str(tiny_dataset), "--run-dir",
             str(tmp_path / "run"), "--model", "tiny", "--steps", "4", "--batch-size", "8", "--fusion", "gated",
             "--max-specialists", "1", "--reports-dir", str(tmp_path / "rep")],
            capture_output=True, text=True, timeout=600, env=env)
        assert trained.returncode == 0, trained.stderr[-3000:]
        evaluated = subprocess.run(
            [sys.executable, "-m", "swarm.trainer.commands.cli", "eval", "--data", str(tiny_dataset), "--checkpoint",
             str(model_dir), "--json", str(tmp_path / "eval.json")],
            capture_output=True, text=True, timeout=600, env=env)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["specialists"] == [SPECIALISTS[0]] and meta["fusion_mode"] == "gated"
    training = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert json.loads((tmp_path / "eval.json").read_text())["micro_f1"] == pytest.approx(training["micro_f1"])
    # Without the specialists' servers a fused primary cannot be evaluated: a clear error, not a silent fallback.
    orphan = _swarm("eval", "--data", str(tiny_dataset), "--checkpoint", str(model_dir))
    assert orphan.returncode == 2 and "name their servers" in orphan.stderr


def test_fusion_without_specialists_is_a_clear_error(tiny_dataset: Path, tmp_path: Path) -> None:
    proc = _swarm("train", "--data", str(tiny_dataset), "--run-dir", str(tmp_path / "r"), "--model", "tiny",
                  "--steps", "2", "--fusion", "gated", "--reports-dir", str(tmp_path / "rep"))
    assert proc.returncode == 2
    assert "needs specialists" in proc.stderr


@pytest.mark.parametrize("command", ["demo", "fusion-report"])
def test_fusion_experiment_needs_at_least_one_seed(tiny_dataset: Path, tmp_path: Path, command: str) -> None:
    proc = _swarm(command, "--data", str(tiny_dataset), "--run-dir", str(tmp_path / "r"), "--seeds", "0")
    assert proc.returncode == 2
    assert "--seeds" in proc.stderr and not (tmp_path / "r").exists()
