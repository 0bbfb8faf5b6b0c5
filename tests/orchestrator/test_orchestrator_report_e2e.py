"""The orchestrator report end to end on a 5-domain fixture: per-fold robust primaries whose outcomes are pooled out
of sample, every policy row, the criteria with the oracle ceiling, and a released primary + policy that load
together."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sotab_fixtures import write_domain_split

from swarm.model_server.model.orchestrator import OrchestratorPolicy
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import domains
from swarm.trainer.experiments.orchestrator import POLICIES, OrchestratorConfig, run_orchestrator
from swarm.trainer.orchestration.parl import ParlConfig


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_orchestrator_report_runs_end_to_end_on_per_fold_primaries(tmp_path: Path) -> None:
    data, reports_dir, run_dir = tmp_path / "data", tmp_path / "reports", tmp_path / "run"
    write_domain_split(data, "training", 6, seed=1)
    write_domain_split(data, "validation", 6, seed=2)
    cfg = OrchestratorConfig(data=data, run_dir=run_dir, reports_dir=reports_dir, steps=3, specialist_steps=2,
                             batch_size=8, seeds=2, folds=2, device="cpu", ablations=False, sweep=[0.0],
                             parl=ParlConfig(iterations=3, group=2))
    result = run_orchestrator(cfg)
    saved = json.loads((reports_dir / "orchestrator.json").read_text())
    names = [p["name"] for p in saved["policies"]]
    assert set(POLICIES) <= set(names) and "parl_wide_only" in names
    assert all(len(p["per_seed_micro_f1"]) == 2 for p in saved["policies"])
    # one robust primary per (seed, fold), each trained with honest fusion and agents dropped
    for seed in range(2):
        for fold in range(2):
            checkpoints = run_dir / f"seed{seed}-f{fold}-robust" / "checkpoints"
            latest = checkpoints / (checkpoints / "LATEST").read_text().strip() / "trainer.json"
            meta = json.loads(latest.read_text())["meta"]
            assert meta["agent_dropout"] is True and meta["honest_fusion"] is True
    c = saved["criteria"]["c"]
    assert c["oracle_over_wide"] is not None and c["all_specialists_over_wide"] is not None
    oracle = saved["oracle_routing"]
    # the oracle reads the labels: no policy can beat it
    assert all(oracle["micro_f1"] >= p["micro_f1"] - 1e-9 for p in saved["policies"])
    assert len(saved["robustness"]) == 2 and set(saved["robustness"][0]) == {"none", "numeric", "all"}
    primary, manifest = PrimaryModel.load(Path(result["checkpoint"]))
    assert manifest.honest_fusion is True and primary.specialists == list(domains())
    OrchestratorPolicy.load(Path(result["checkpoint"]) / "orchestrator", primary)  # trained for this primary
    transfer = saved["deep_transfer"]
    assert set(transfer) == {"first", "second", "union", "chained", "handoff"}
    assert transfer["union"]["minus_union"] == 0.0
    assert all(0 <= t["accuracy"] <= 1 for t in transfer.values())
    helped = saved["specialist_help"]
    assert [h["name"] for h in helped] == list(domains())
    assert all(0 <= h["own_domain_fixes"] <= h["fixes"] and 0 <= h["domain_share_of_columns"] <= 1 for h in helped)
    markdown = (reports_dir / "orchestrator.md").read_text()
    assert "Ceiling of any routing" in markdown and "second specialist uses the first" in markdown
    assert "Where each specialist's help lands" in markdown
    assert (reports_dir / "orchestrator.png").stat().st_size > 0
