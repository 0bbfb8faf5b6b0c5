"""`swarm train|eval|synth|memory|adapt`: train a primary (or its orchestrator policy), evaluate it, generate
synthetic tables, size a specialist, adapt one to a new domain.

`swarm train`'s options come from RunConfig, TrainConfig, PolicyRunConfig and ParlConfig (`config_options`):
defaults and help are the configs'.
"""
from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from swarm.trainer.commands.cli_options import (
    DEVICE_OPTION,
    ENDPOINTS_ENV,
    PRECISION_OPTION,
    DType,
    FusionMode,
    Precision,
    endpoints_or_env,
    fail,
    publish,
    use_devices,
)
from swarm.trainer.commands.config_options import DATA_FLAG, ConfigArgs, Flag, config_options
from swarm.trainer.orchestration.parl import ParlConfig
from swarm.trainer.orchestration.parl_pipeline import PolicyRunConfig
from swarm.trainer.training.adapt import AdaptConfig
from swarm.trainer.training.model_swarms import SwarmConfig
from swarm.trainer.training.primary import RunConfig
from swarm.trainer.training.train import TrainConfig


class TrainMode(StrEnum):
    supervised = "supervised"
    parl = "parl"


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command(name="eval")(evaluate)
    app.command()(synth)
    app.command()(memory)
    app.command()(adapt)


@config_options("run", RunConfig, (
    "data", "run_dir", "model", "synthetic_tables", "synthetic_steps", "fusion", "max_specialists", "specialist_dirs",
    "reports_dir", "agent_dropout"), flags={
    "data": DATA_FLAG, "fusion": Flag(type=FusionMode | None), "specialist_dirs": Flag("--specialist-dir")})
@config_options("training", TrainConfig, ("steps", "batch_size", "lr", "seed", "ckpt_every", "stop_after"),
                flags={"stop_after": Flag(hidden=True)})
@config_options("policy", PolicyRunConfig, ("split",), help_prefix="parl: ")
@config_options("parl", ParlConfig, (
    "iterations", "lambda1", "lambda2", "anneal", "beta_calls", "beta_steps", "beta_spawn", "budget", "max_deep"),
    flags={"budget": Flag("--spawn-budget")}, help_prefix="parl: ")
def train(
    *,
    run: ConfigArgs[RunConfig],
    training: ConfigArgs[TrainConfig],
    specialist: list[str] = typer.Option(
        [], help=f"A specialist server NAME=HOST:PORT (repeat; default: ${ENDPOINTS_ENV})."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
    mode: TrainMode = typer.Option(TrainMode.supervised, help="supervised: train a primary; parl: train the "
                                   "orchestrator of the trained primary --checkpoint (it and its specialists frozen)."),
    checkpoint: Path | None = typer.Option(None, help="parl: the trained (fused) primary directory."),
    policy: ConfigArgs[PolicyRunConfig],
    policy_out: Path | None = typer.Option(None, help="parl: where the policy goes (default: RUN_DIR/orchestrator; "
                                           "serve it with --policy, or copy it to CHECKPOINT/orchestrator)."),
    parl: ConfigArgs[ParlConfig],
) -> None:
    """Train a primary, alone or fused with specialists (resumes from RUN_DIR's checkpoints), and evaluate it on
    validation; or, with --mode parl, train the orchestrator policy of a trained primary."""
    from swarm.model_server.model.tables import DataError
    from swarm.trainer.reports import print_scores
    from swarm.trainer.training.primary import run_training

    device = use_devices(device, dtype)
    endpoints = endpoints_or_env(specialist)
    cfg = run.build(train=training.build(device=device), endpoints=endpoints)
    if mode == TrainMode.parl:
        if checkpoint is None:
            fail("--mode parl needs --checkpoint, the trained primary whose orchestrator is trained")
        _train_policy(policy.build(checkpoint=checkpoint, data=cfg.data, out=policy_out or cfg.run_dir / "orchestrator",
                                   reports_dir=cfg.reports_dir or cfg.run_dir, parl=parl.build(seed=cfg.train.seed),
                                   endpoints=endpoints, device=device))
        return
    try:
        scores, model_dir = run_training(cfg)
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    print_scores(scores, f"primary, validation ({model_dir})")
    publish({"micro_f1": scores.micro_f1, "macro_f1": scores.macro_f1})


def _train_policy(cfg: PolicyRunConfig) -> None:
    from swarm.model_server.model.tables import DataError
    from swarm.trainer.orchestration.parl_pipeline import run_parl

    try:
        result = run_parl(cfg)
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(f"policy saved to {result['policy']}: on the {result['columns']} columns it learnt from (in-sample) "
               f"micro-F1 {result['micro_f1']:.3f}, {result['calls_per_column']:.2f} specialist calls per column, "
               f"{result['critical_steps']:.2f} critical steps per table, {result['specialists_per_table']:.2f} "
               f"specialists per table")
    publish({"micro_f1": result["micro_f1"], "macro_f1": result["macro_f1"],
             "critical_steps": round(result["critical_steps"])})


def evaluate(
    data: Path = typer.Option(..., help="Any directory in the SOTAB CTA format (a split, or splits)."),
    checkpoint: Path = typer.Option(..., help="A trained model directory (model.safetensors + model.json)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    split: str | None = typer.Option(None, help="Which split when DATA holds several (default: validation)."),
    specialist: list[str] = typer.Option(
        [], help=f"Server of a specialist the primary fuses, NAME=HOST:PORT (repeat; default: ${ENDPOINTS_ENV}); "
        "not needed when its model.json names specialist directories."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Evaluate a trained primary: micro/macro-F1, per-class F1, hard classes."""
    from swarm.model_server.model.tables import DataError
    from swarm.trainer.reports import print_scores, write_json
    from swarm.trainer.training.evaluate import evaluate_dir

    device = use_devices(device, dtype)
    try:
        endpoints = endpoints_or_env(specialist)
        scores = evaluate_dir(checkpoint, data, split, endpoints, device)
    except (DataError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    payload = scores.to_dict()
    publish({"micro_f1": scores.micro_f1, "macro_f1": scores.macro_f1})
    if json_out is not None:
        write_json(json_out, payload)
    print_scores(scores, f"{checkpoint} on {data}")
    if json_out is None:
        json.dump(payload, sys.stdout, indent=2)
        print()


def synth(
    out: Path = typer.Option(..., help="Output split directory (SOTAB format)."),
    tables: int = typer.Option(1000, help="Number of tables."),
    seed: int = typer.Option(0),
) -> None:
    """Generate deterministic synthetic web tables in the SOTAB format."""
    from swarm.trainer.data.sotab import load_split
    from swarm.trainer.data.synth import table_stats, write_synthetic

    write_synthetic(out, tables, seed)
    split = load_split(out)
    typer.echo(f"wrote {len(split.tables)} tables, {len(split.columns)} labelled columns to {out}")
    typer.echo(json.dumps(table_stats(list(split.tables.values())), indent=2))


def memory(
    specialist: Path | None = typer.Option(None, help="A trained specialist directory (default: an untrained one)."),
    config: str = typer.Option("small", help="Config of the untrained specialist when no directory is given."),
    dtype: DType = typer.Option(DType["bfloat16"], help="Serving dtype."),
    batch: int = typer.Option(32, help="Columns per request."),
) -> None:
    """Resident bytes of a frozen specialist (weights + one batch of activations + its knowledge sources' data): a
    SpecialistPool's residentBytes."""
    from swarm.model_server.model.devices import DTYPES
    from swarm.model_server.model.resident_bytes import specialist_resident_bytes
    from swarm.model_server.model.specialist import Specialist, domains, untrained

    torch_dtype = DTYPES[dtype.value]
    spec = Specialist.load(specialist) if specialist else untrained(next(iter(domains())), config)
    estimate = specialist_resident_bytes(spec.model, spec.config, torch_dtype, batch,
                                         knowledge=spec.model.backbone.knowledge)
    typer.echo(json.dumps({"specialist": spec.name, "config": spec.config.name, "dtype": dtype.value, "batch": batch,
                           "knowledge_sources": list(spec.model.backbone.knowledge)} | estimate.to_dict(), indent=2))


@config_options("adapt", AdaptConfig, ("domain", "data", "out", "reference", "reports_dir", "utility_columns"),
                flags={"data": DATA_FLAG})
@config_options("swarm", SwarmConfig, ("particles", "iterations", "seed"))
def adapt(
    *,
    adapt: ConfigArgs[AdaptConfig],
    expert: list[str] = typer.Option(
        ..., help="A trained specialist: its directory, or NAME=FOLDER of specialists (repeat; two or more)."
    ),
    swarm: SwarmConfig,
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Model Swarms: search the experts' weight space for a specialist of DOMAIN; reports/adapt_DOMAIN.{json,md,png}."""
    from swarm.model_server.model.specialist import specialist_dir
    from swarm.model_server.model.tables import DataError
    from swarm.trainer.training.adapt import adapt as run_adapt

    def expert_path(value: str) -> Path:  # PATH, or NAME=FOLDER: specialist NAME in a folder of them
        name, sep, folder = value.partition("=")
        return specialist_dir(Path(folder), name) if sep else Path(value)

    device = use_devices(device, dtype)
    cfg = adapt.build(experts=tuple(map(expert_path, expert)), swarm=swarm, device=device)
    try:
        report = run_adapt(cfg)
    except (DataError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    result = next(m for m in report["models"] if m["name"] == "Model Swarms")
    publish({"micro_f1": result["micro_f1"], "macro_f1": result["macro_f1"]})
