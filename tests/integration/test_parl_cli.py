"""`swarm train --mode parl` end to end: a robust fused primary (`--agent-dropout`), its orchestrator trained on a
labelled split, the policy refused by another primary, and `swarm annotate` serving with it over gRPC."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.model_server.model.specialist import untrained

SPECIALISTS = ["temporal", "numeric"]


def _swarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parl_mode_trains_a_policy_that_serving_uses(tiny_dataset: Path,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp_path = tmp_path_factory.mktemp("parl")  # outside the dataset: a CSV written there would be read as data
    dirs = []
    for i, name in enumerate(SPECIALISTS):
        untrained(name, seed=i).save(tmp_path / "specialists" / name)
        dirs += ["--specialist-dir", str(tmp_path / "specialists" / name)]
    run = tmp_path / "run"
    trained = _swarm("train", "--data", str(tiny_dataset), "--run-dir", str(run), "--model", "tiny", "--steps", "6",
                     "--batch-size", "8", "--fusion", "gated", "--agent-dropout", *dirs,
                     "--reports-dir", str(tmp_path / "rep"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((run / "model" / "model.json").read_text())["agent_dropout"] is True

    missing = _swarm("train", "--mode", "parl", "--data", str(tiny_dataset))
    assert missing.returncode == 2 and "--mode parl needs --checkpoint" in missing.stderr

    policy = tmp_path / "policy"
    parl = _swarm("train", "--mode", "parl", "--checkpoint", str(run / "model"), "--data", str(tiny_dataset),
                  "--split", "validation", "--iterations", "3", "--policy-out", str(policy),
                  "--reports-dir", str(tmp_path / "rep"))
    assert parl.returncode == 0, parl.stderr[-3000:]
    assert "policy saved to" in parl.stdout
    meta = json.loads((policy / "orchestrator.json").read_text())
    assert meta["specialists"] == SPECIALISTS and meta["kind"] == "orchestrator"
    curves = json.loads((tmp_path / "rep" / "parl_training.json").read_text())["curves"]
    assert len(curves) == 3 and {"r_perf", "r_parallel", "r_finish", "lambda1"} <= set(curves[0])

    # The policy is served: the CSV names each column's specialists, the summary the complexity.
    out = tmp_path / "pred.csv"
    annotated = _swarm("annotate", "--data", str(tiny_dataset), "--checkpoint", str(run / "model"),
                       "--policy", str(policy), "--out", str(out), "--json", str(tmp_path / "summary.json"))
    assert annotated.returncode == 0, annotated.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert rows and {"specialists", "deep_steps"} <= set(rows[0])
    assert all(set(r["specialists"].split()) <= set(SPECIALISTS) for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complexity_mean"] is not None and 0 <= summary["complexity_mean"] <= 1

    # Another primary (different weights) refuses it.
    other = tmp_path / "other"
    retrained = _swarm("train", "--data", str(tiny_dataset), "--run-dir", str(other), "--model", "tiny", "--steps",
                       "6", "--batch-size", "8", "--fusion", "gated", "--seed", "1", *dirs,
                       "--reports-dir", str(tmp_path / "rep2"))
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    refused = _swarm("annotate", "--data", str(tiny_dataset), "--checkpoint", str(other / "model"),
                     "--policy", str(policy), "--out", str(tmp_path / "x.csv"))
    assert refused.returncode == 2 and "trained against primary" in refused.stderr
