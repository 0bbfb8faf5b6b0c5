"""`swarm fusion-report|accuracy-report|orchestrator-report`: the experiments behind the committed reports/.

Their options come from the experiments' config classes (`config_options`): defaults and help are the configs'.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer

from swarm.trainer.commands.cli_options import (
    DEVICE_OPTION,
    PRECISION_OPTION,
    Precision,
    fail,
    use_devices,
)
from swarm.trainer.commands.config_options import DATA_FLAG, ConfigArgs, config_options, field_default
from swarm.trainer.experiments.accuracy import AccuracyConfig
from swarm.trainer.experiments.fusion import FusionExperimentConfig
from swarm.trainer.experiments.orchestrator import OrchestratorConfig
from swarm.trainer.orchestration.parl import ParlConfig

C = TypeVar("C")


def _run(experiment: Callable[[C], dict], cfg: C, markdown: Callable[[dict], str]) -> None:
    """Run one experiment and print its report and how long it took; bad data is the CLI's error (exit 2)."""
    from swarm.model_server.model.tables import DataError

    try:
        result = experiment(cfg)
    except (DataError, ValueError) as exc:
        fail(str(exc))
    typer.echo(markdown(result))
    typer.echo(f"({result['seconds']:.0f} s)")


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
    from swarm.trainer.experiments.fusion import run_fusion_experiment

    device = use_devices(device, dtype)
    cfg = experiment.build(primary_seeds=tuple(range(seeds)), device=device)
    _run(run_fusion_experiment, cfg, lambda _: (cfg.reports_dir / "fusion.md").read_text(encoding="utf-8"))


@config_options("experiment", AccuracyConfig, (
    "data", "run_dir", "reports_dir", "model", "steps", "specialist_steps", "folds", "seeds", "validation_copies",
    "ablation", "knowledge", "controls", "singles"), flags={"data": DATA_FLAG})
def accuracy_report(
    *,
    experiment: ConfigArgs[AccuracyConfig],
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Grouped K-fold CV of the primary alone and with its specialists, plus the ablation ladder:
    reports/accuracy.{json,md,png}; the released swarm (all labelled data) in RUN_DIR/released/model."""
    from swarm.trainer.experiments.accuracy import run_accuracy
    from swarm.trainer.experiments.accuracy_report import accuracy_markdown

    _run(run_accuracy, experiment.build(device=use_devices(device, dtype)), accuracy_markdown)


@config_options("experiment", OrchestratorConfig, (
    "data", "run_dir", "reports_dir", "model", "steps", "specialist_steps", "seeds", "folds", "robustness",
    "ablations"), flags={"data": DATA_FLAG})
@config_options("parl", ParlConfig, ("iterations",))
def orchestrator_report(
    *,
    experiment: ConfigArgs[OrchestratorConfig],
    parl: ConfigArgs[ParlConfig],
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Accuracy against cost of every routing policy (primary alone, all specialists, random k, threshold rule,
    supervised complexity head, PARL) and the design's success criteria: reports/orchestrator.{json,md,png}; the
    released primary + policy in RUN_DIR/released/model."""
    from swarm.trainer.experiments.orchestrator import run_orchestrator
    from swarm.trainer.experiments.orchestrator_report import orchestrator_markdown

    _run(run_orchestrator, experiment.build(parl=parl.build(), device=use_devices(device, dtype)),
         orchestrator_markdown)
