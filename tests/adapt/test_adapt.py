"""`swarm adapt` end to end on small specialists: what it writes, what it scores, and what it refuses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from sotab_fixtures import write_fixture_split
from typer.testing import CliRunner

from swarm.model_server.model.specialist import OTHER, Specialist, domains, untrained
from swarm.model_server.model.tables import load_labels
from swarm.trainer.commands.cli import _register_all, app
from swarm.trainer.training.adapt import AdaptConfig, adapt, leave_one_out_f1, searched_names
from swarm.trainer.training.model_swarms import SwarmConfig
from swarm.trainer.training.primary import real_examples
from swarm.trainer.training.specialists import domain_examples

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough validation columns of the temporal domain (Date) for a utility set and a held-out set."""
    root = tmp_path_factory.mktemp("adapt-data")
    write_fixture_split(root, "training", 4, seed=1)
    write_fixture_split(root, "validation", 40, seed=2)
    return root


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("experts")
    paths = []
    for seed, name in enumerate(["geographic", "numeric", "people"]):
        untrained(name, seed=seed).save(root / name)
        paths.append(root / name)
    return paths


def _config(dataset: Path, experts: list[Path], tmp_path: Path, **extra: object) -> AdaptConfig:
    return AdaptConfig(data=dataset, experts=tuple(experts), domain="temporal", out=tmp_path / "adapted",
                       reports_dir=tmp_path / "reports", utility_columns=20,
                       swarm=SwarmConfig(particles=4, iterations=3, seed=0), **extra)  # type: ignore[arg-type]


@pytest.mark.slow
def test_adapt_saves_a_specialist_of_the_domain_and_reports(dataset: Path, experts: list[Path],
                                                            tmp_path: Path) -> None:
    report = adapt(_config(dataset, experts, tmp_path))
    adapted = Specialist.load(tmp_path / "adapted")
    assert adapted.name == "temporal" and adapted.labels == list(domains()["temporal"].labels)
    models = {m["name"].split(" (")[0]: m for m in report["models"]}
    assert list(models) == ["expert geographic", "expert numeric", "expert people", "Model Swarms"]
    swarm = models["Model Swarms"]
    assert swarm["utility"] >= max(m["utility"] for m in report["models"][:3])
    assert report["utility_columns"] == 20 and report["held_out_columns"] == 80 - 20
    # The saved head is the reported model: its own predictions score what the report says on the held-out set.
    labels = load_labels()
    columns = list(zip(*domain_examples(real_examples(dataset, labels)[1], labels, domains()["temporal"], seed=0),
                       strict=True))
    random.Random(0).shuffle(columns)
    held = columns[20:]
    predicted = adapted.predict([t for t, _ in held]).argmax(-1)
    assert sum(int(p) == y for p, (_, y) in zip(predicted, held, strict=True)) / len(held) == pytest.approx(
        swarm["micro_f1"])
    for suffix in (".json", ".md", ".png"):
        assert (tmp_path / "reports" / f"adapt_temporal{suffix}").stat().st_size > 0
    assert json.loads((tmp_path / "reports" / "adapt_temporal.json").read_text())["domain"] == "temporal"


@pytest.mark.slow
def test_a_reference_of_the_domain_is_scored_and_one_of_another_refused(dataset: Path, experts: list[Path],
                                                                        tmp_path: Path) -> None:
    untrained("temporal", seed=5).save(tmp_path / "temporal")
    report = adapt(_config(dataset, experts, tmp_path, reference=tmp_path / "temporal"))
    assert report["models"][-1]["name"].startswith("reference: temporal") and report["models"][-1]["utility"] is None
    with pytest.raises(ValueError, match="other labels than domain 'temporal'"):
        adapt(_config(dataset, experts, tmp_path, reference=experts[0]))


def test_the_cli_refuses_what_cannot_be_adapted(dataset: Path, experts: list[Path], tmp_path: Path) -> None:
    _register_all()
    runner = CliRunner()
    base = ["adapt", "--data", str(dataset), "--out", str(tmp_path / "o"), "--reports-dir", str(tmp_path),
            "--utility-columns", "20"]
    cases = [
        (["--domain", "astrology", "--expert", str(experts[0]), "--expert", str(experts[1])], "unknown target domain"),
        (["--domain", "temporal", "--expert", str(experts[0])], "at least two experts"),
        (["--domain", "temporal", "--expert", str(experts[0]), "--expert", str(experts[1]),
          "--utility-columns", "70"], "not enough for 70 utility columns"),
        (["--domain", "temporal", "--expert", str(experts[0]), "--expert", str(tmp_path)],
         "not a specialist directory"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_only_the_weights_the_experts_differ_in_are_searched() -> None:
    a, b = untrained("geographic", seed=0).model, untrained("numeric", seed=1).model
    names = searched_names([a, b])
    assert names and not any(n.startswith("decoder.head.") for n in names)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("decoder.head.")}, strict=False)
    assert searched_names([a, b]) == []


def test_leave_one_out_never_uses_a_column_to_predict_itself() -> None:
    """Two columns per class, each far from the other of its class: leave-one-out gets them all wrong, while a
    head fitted on all columns (scored on them) would get them right."""
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    targets = torch.tensor([0, 0, 1, 1])
    assert leave_one_out_f1(features, targets, ["a", OTHER]) == 0.0
    assert leave_one_out_f1(features, torch.tensor([0, 1, 0, 1]), ["a", OTHER]) == 1.0


@pytest.mark.slow
def test_the_cli_takes_experts_by_name_in_a_folder_of_specialists(dataset: Path, experts: list[Path],
                                                                  tmp_path: Path) -> None:
    """As a SwarmJob of mode adapt passes them: NAME=FOLDER, the pool's model path."""
    _register_all()
    folder = experts[0].parent
    result = CliRunner().invoke(app, [
        "adapt", "--data", str(dataset), "--domain", "temporal", "--utility-columns", "20", "--iterations", "1",
        "--expert", f"geographic={folder}", "--expert", f"numeric={folder}", "--out", str(tmp_path / "adapted"),
        "--reports-dir", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "adapt_temporal.json").read_text())
    assert report["experts"] == [str(folder / "geographic"), str(folder / "numeric")]
    assert Specialist.load(tmp_path / "adapted").name == "temporal"
