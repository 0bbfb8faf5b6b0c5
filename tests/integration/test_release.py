"""`swarm release` and `swarm demo` end to end on a small fixture: roles of the tables, what each part records it
learnt from, reuse of built stages, the served swarm scoring what the same model scores in process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sotab_fixtures import write_domain_split
from typer.testing import CliRunner

from swarm.model_server.model.orchestrator import OrchestratorPolicy
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import Specialist, domains
from swarm.trainer.data.sotab import load_dataset
from swarm.trainer.orchestration.parl import ParlConfig
from swarm.trainer.release import ReleaseConfig, Roles, assign_roles, build_release, table_role


@pytest.fixture
def domain_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_domain_split(root, "training", 30, seed=1)
    write_domain_split(root, "training_columns", 10, seed=3)
    write_domain_split(root, "validation", 6, seed=2)
    return root


def small(data: Path, run_dir: Path, **update: object) -> ReleaseConfig:
    fields: dict = {"steps": 4, "specialist_steps": 3, "batch_size": 16, "fusion_share": 0.3, "policy_share": 0.3,
                    "parl": ParlConfig(iterations=2), "device": "cpu"}
    return ReleaseConfig(data=data, run_dir=run_dir, **(fields | update))


def test_table_roles_follow_the_shares_and_not_the_order() -> None:
    names = [f"T{i}" for i in range(4000)]
    roles = [table_role(n, 0, [0.15, 0.3]) for n in names]
    shares = [roles.count(r) / len(names) for r in range(3)]
    assert shares == pytest.approx([0.15, 0.3, 0.55], abs=0.03)
    assert [table_role(n, 0, [0.15, 0.3]) for n in reversed(names)] == roles[::-1]
    assert roles != [table_role(n, 1, [0.15, 0.3]) for n in names]  # the seed draws another split


def test_roles_are_disjoint_and_honour_specialist_splits() -> None:
    by_split = {"training": {f"a{i}" for i in range(50)}, "validation": {f"v{i}" for i in range(50)}}
    cfg = ReleaseConfig(data=Path("."), specialist_splits=["training"], policy_share=0.2)
    roles = assign_roles(cfg, by_split, None)
    assert not (roles.expert & roles.fusion or roles.expert & roles.policy or roles.fusion & roles.policy)
    assert roles.expert | roles.fusion | roles.policy == by_split["training"] | by_split["validation"]
    assert roles.expert <= by_split["training"] and roles.fusion <= by_split["validation"]
    seen = {"a1", "a2", "v3"}
    given = assign_roles(cfg.model_copy(update={"policy_share": 0.0}), by_split, seen)
    assert given == Roles(expert=seen, fusion=(by_split["training"] | by_split["validation"]) - seen,
                         policy=set())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_release_records_what_each_part_learnt_from_and_reuses_built_stages(domain_dataset: Path,
                                                                             tmp_path: Path) -> None:
    cfg = small(domain_dataset, tmp_path / "run")
    record = build_release(cfg)
    splits = load_dataset(domain_dataset)
    assert "validation" not in record["splits"]
    learnt_from = {r.table for name in record["splits"] for r in splits[name].columns}
    roles = assign_roles(cfg, {n: {r.table for r in splits[n].columns} for n in record["splits"]}, None)
    assert record["tables"] == {"expert": len(roles.expert), "fusion": len(roles.fusion), "policy": len(roles.policy)}
    assert all(record["tables"].values()) and sum(record["tables"].values()) == len(learnt_from)

    model_dir = Path(record["primary"])
    model, manifest = PrimaryModel.load(model_dir)
    assert manifest.honest_fusion and manifest.agent_dropout and list(model.specialists) == list(domains())
    for directory in manifest.resolve_specialist_dirs(model_dir):
        specialist = Specialist.load(directory)
        # Each specialist learnt from expert tables only, and records them.
        assert specialist.trained_tables and specialist.trained_tables <= roles.expert
    OrchestratorPolicy.load(Path(record["policy"]), model)  # bound to this very primary
    assert record["columns"]["policy"] == sum(r.table in roles.policy for n in record["splits"]
                                              for r in splits[n].columns)

    weights = model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_release(cfg)["primary"] == record["primary"]
    assert weights.stat().st_mtime_ns == before  # same recipe: reused
    build_release(cfg.model_copy(update={"steps": 5}))
    assert weights.stat().st_mtime_ns != before  # another recipe: rebuilt

    # Given specialists are not trained again; the primary trusts them only outside the tables they record.
    given = build_release(small(domain_dataset, tmp_path / "given", policy_share=0.0,
                                specialist_dirs=manifest.resolve_specialist_dirs(model_dir)))
    assert given["policy"] is None and given["tables"]["expert"] == len(roles.expert)
    assert given["columns"]["fusion"] > 0
    assert not (tmp_path / "given" / "specialists").exists()

    # At most max_specialists of them: the primary names exactly the directories of those it fuses.
    two = build_release(small(domain_dataset, tmp_path / "two", policy_share=0.0, max_specialists=2,
                              specialist_dirs=manifest.resolve_specialist_dirs(model_dir)))
    two_model, two_manifest = PrimaryModel.load(Path(two["primary"]))
    assert [Specialist.load(d).name for d in two_manifest.resolve_specialist_dirs(Path(two["primary"]))] == \
        two_model.specialists == list(domains())[:2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_serves_what_the_same_model_scores_in_process(domain_dataset: Path, tmp_path: Path) -> None:
    from swarm.trainer.experiments.demo import DemoConfig, run_demo

    cfg = DemoConfig(release=small(domain_dataset, tmp_path / "run"), reports_dir=tmp_path / "reports")
    result = run_demo(cfg)
    assert result["served_agrees_with_in_process"] == 1.0
    assert result["scores"]["served"] == result["scores"]["in_process"]
    assert result["specialists_missing"] == [] and result["tables"] == 6
    assert result["labelled_columns"] == 6 * len(domains())
    for suffix in ("json", "md", "png"):
        assert (cfg.reports_dir / f"demo.{suffix}").stat().st_size > 0
    assert json.loads((cfg.reports_dir / "demo.json").read_text())["tables_per_s"] > 0

    with pytest.raises(ValueError, match="annotate a split it never saw"):
        run_demo(cfg.model_copy(update={"split": "training"}))


def test_release_cli_refuses_missing_splits_clearly(tmp_path: Path) -> None:
    from swarm.trainer.commands.cli import _register_all, app

    _register_all()
    write_domain_split(tmp_path, "validation", 2, seed=0)
    result = CliRunner().invoke(app, ["release", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                                      "--device", "cpu"])
    assert result.exit_code == 2
    assert "none of the splits" in result.output


def test_a_changed_domains_yaml_is_another_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Specialists built for other domains (labels or knowledge sources) are never reused: their heads differ."""
    from swarm.model_server.model.specialist import Domain
    from swarm.trainer import release

    cfg = release.ReleaseConfig(data=tmp_path, run_dir=tmp_path / "run")
    before = cfg.recipe()
    assert set(before["domains"]) == set(domains())
    geo = domains()["geographic"]
    changed = {**domains(), "geographic": Domain(geo.name, geo.description, geo.labels[:-1], geo.knowledge)}
    monkeypatch.setattr(release, "domains", lambda: changed)
    assert cfg.recipe() != before
