"""`swarm fusion-report|accuracy-report|orchestrator-report`: the experiments behind the committed reports/.

Their options come from the experiments' config classes (`config_options`): defaults and help are the configs'.
"""
from __future__ import annotations

from pathlib import Path

import typer

from swarm.model_server import choices
from swarm.trainer.commands.cli_options import (
    DEFAULT_DATA,
    DEVICE_OPTION,
    PRECISION_OPTION,
    Precision,
    fail,
    use_devices,
)
from swarm.trainer.commands.config_options import DATA_FLAG, ConfigArgs, config_options, field_default
from swarm.trainer.experiments.fusion import FusionExperimentConfig


def register(app: typer.Typer) -> None:
    app.command("fusion-report")(fusion_report)
    app.command("accuracy-report")(accuracy_report)
    app.command("orchestrator-report")(orchestrator_report)


@config_options("experiment", FusionExperimentConfig, (
    "data", "run_dir", "model", "synthetic_tables", "pretrain_steps", "specialist_steps", "primary_steps"),
    flags={"data": DATA_FLAG})
def fusion_report(
    *,
    experiment: ConfigArgs[FusionExperimentConfig],
    seeds: int = typer.Option(len(field_default(FusionExperimentConfig, "primary_seeds")), min=1,
                              help="Primaries trained per row (seeds 0..N-1); rows report the mean and standard "
                              "deviation."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Primary alone vs + 1, 3, all specialists for every fusion mode: reports/fusion.{json,md,png}."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.experiments.fusion import run_fusion_experiment

    device = use_devices(device, dtype)
    cfg = experiment.build(primary_seeds=tuple(range(seeds)), device=device)
    try:
        result = run_fusion_experiment(cfg)
    except (DataError, ValueError) as exc:
        fail(str(exc))
    typer.echo((cfg.reports_dir / "fusion.md").read_text(encoding="utf-8"))
    typer.echo(f"({result['seconds']:.0f} s)")


def accuracy_report(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory (training splits + validation)."),
    run_dir: Path = typer.Option(Path("runs/accuracy"), help="Specialists, fold models and the released swarm."),
    reports_dir: Path = typer.Option(Path("reports")),
    model: str = typer.Option("tiny", help="Backbone config of primaries and specialists."),
    steps: int = typer.Option(600, min=1, help="Optimizer steps per primary."),
    specialist_steps: int = typer.Option(400, min=1),
    folds: int = typer.Option(5, min=2, help="Grouped folds over the validation tables."),
    seeds: int = typer.Option(3, min=1, help="The CV is repeated per seed (every fold re-trained)."),
    validation_copies: int = typer.Option(1, min=1, help="Times each validation column of a fold's training set "
                                                          "is repeated."),
    ablation: bool = typer.Option(True, help="Also run the ablation rows (holdout ladder, CV variants)."),
    knowledge: bool = typer.Option(True, help="The specialists read their domain's knowledge sources."),
    controls: bool = typer.Option(True, help="Also the control rows: the primary reading every knowledge source "
                                  "itself, and specialists without knowledge sources."),
    singles: bool = typer.Option(True, help="Also each specialist alone (cv.single.<name>), specialist_help and "
                                 "criterion (a), from one agent-dropout primary per run."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Grouped K-fold CV of the primary alone and with its specialists, plus the ablation ladder:
    reports/accuracy.{json,md,png}; the released swarm (all labelled data) in RUN_DIR/released/model."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.experiments.accuracy import AccuracyConfig, accuracy_markdown, run_accuracy

    device = use_devices(device, dtype)
    cfg = AccuracyConfig(data=data, run_dir=run_dir, reports_dir=reports_dir, model=model, steps=steps,
                         specialist_steps=specialist_steps, folds=folds, seeds=seeds,
                         validation_copies=validation_copies, ablation=ablation, knowledge=knowledge,
                         controls=controls, singles=singles, device=device)
    try:
        result = run_accuracy(cfg)
    except (DataError, ValueError) as exc:
        fail(str(exc))
    typer.echo(accuracy_markdown(result))
    typer.echo(f"({result['seconds']:.0f} s)")


def orchestrator_report(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory (training splits + validation)."),
    run_dir: Path = typer.Option(Path("runs/orchestrator"), help="Specialists, primaries and the released policy."),
    reports_dir: Path = typer.Option(Path("reports")),
    model: str = typer.Option("tiny", help="Backbone config of primaries and specialists."),
    steps: int = typer.Option(600, min=1, help="Optimizer steps per primary."),
    specialist_steps: int = typer.Option(400, min=1),
    seeds: int = typer.Option(3, min=1),
    folds: int = typer.Option(3, min=2, help="Grouped folds over the validation tables (policies fit on K-1)."),
    iterations: int = typer.Option(choices.PARL_ITERATIONS, min=1, help="PARL iterations per policy."),
    robustness: bool = typer.Option(True, help="Also train primaries dedicated to one subset (robustness check)."),
    ablations: bool = typer.Option(True, help="Also train the PARL ablations (no annealing, no r_parallel, ...)."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Accuracy against cost of every routing policy (primary alone, all specialists, random k, threshold rule,
    supervised complexity head, PARL) and the design's success criteria: reports/orchestrator.{json,md,png}; the
    released primary + policy in RUN_DIR/released/model."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.experiments.orchestrator import OrchestratorConfig, orchestrator_markdown, run_orchestrator
    from swarm.trainer.orchestration.parl import ParlConfig

    device = use_devices(device, dtype)
    cfg = OrchestratorConfig(data=data, run_dir=run_dir, reports_dir=reports_dir, model=model, steps=steps,
                             specialist_steps=specialist_steps, seeds=seeds, folds=folds, robustness=robustness,
                             ablations=ablations, device=device, parl=ParlConfig(iterations=iterations))
    try:
        result = run_orchestrator(cfg)
    except (DataError, ValueError) as exc:
        fail(str(exc))
    typer.echo(orchestrator_markdown(result))
    typer.echo(f"({result['seconds']:.0f} s)")

