"""CLI commands for data, training, evaluation and adaptation: `swarm demo|train|eval|synth|adapt|...`."""
from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from swarm.model_server import choices
from swarm.model_server.choices import DEFAULT_MAX_SPECIALISTS
from swarm.trainer.commands.cli_options import (
    DEVICE_OPTION,
    PRECISION_OPTION,
    DType,
    FusionMode,
    Precision,
    fail,
    use_devices,
)

if TYPE_CHECKING:
    from swarm.trainer.orchestration.parl import ParlConfig

DEFAULT_DATA = Path("data/sotab-v2-sample")
ENDPOINTS_ENV = "SWARM_SPECIALIST_ENDPOINTS"


class TrainMode(StrEnum):
    supervised = "supervised"
    parl = "parl"


def parse_endpoints(pairs: list[str]) -> dict[str, str]:
    """`NAME=HOST:PORT` pairs (empty strings ignored) as a name -> address map."""
    endpoints = {}
    for pair in filter(None, (p.strip() for p in pairs)):
        name, sep, address = pair.partition("=")
        if not sep or not name or not address:
            raise typer.BadParameter(f"{pair!r}: expected NAME=HOST:PORT", param_hint="--specialist")
        endpoints[name] = address
    return endpoints


def publish(metrics: dict[str, float | int]) -> None:
    """Hand the metrics to the SwarmJob status when running in a trainer pod (a no-op elsewhere)."""
    from swarm.trainer.commands.metrics_publisher import publish_metrics

    publish_metrics(metrics)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command(name="eval")(evaluate)
    app.command()(synth)
    app.command()(release)
    app.command()(demo)
    app.command()(memory)
    app.command("fusion-report")(fusion_report)
    app.command("accuracy-report")(accuracy_report)
    app.command("orchestrator-report")(orchestrator_report)
    app.command()(adapt)



def train(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory (training + validation splits)."),
    run_dir: Path = typer.Option(Path("runs/train"), help="Checkpoints; the final model goes to RUN_DIR/model."),
    model: str = typer.Option("small", help="Backbone config: tiny, small or base."),
    steps: int = typer.Option(1500, help="Optimizer steps on the real training columns."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(2e-3),
    synthetic_tables: int = typer.Option(0, help="Synthetic tables generated for pre-training (0: none)."),
    synthetic_steps: int = typer.Option(0, help="Pre-training steps on synthetic tables."),
    fusion: FusionMode | None = typer.Option(None, help="Fuse specialist states with this mode."),
    max_specialists: int = typer.Option(DEFAULT_MAX_SPECIALISTS,
                                        help="Use at most this many of the given specialists (0: none)."),
    specialist_dir: list[Path] = typer.Option([], help="A trained specialist directory (repeat)."),
    specialist: list[str] = typer.Option(
        [], help=f"A specialist server NAME=HOST:PORT (repeat; default: ${ENDPOINTS_ENV})."),
    seed: int = typer.Option(0),
    ckpt_every: int = typer.Option(100, help="Checkpoint every N steps (and on SIGTERM/SIGINT)."),
    reports_dir: Path | None = typer.Option(None, help="Where metrics.json and the per-class report go (default: "
                                            "RUN_DIR; the committed reports/ belong to the report commands)."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
    stop_after: int | None = typer.Option(None, hidden=True),
    mode: TrainMode = typer.Option(TrainMode.supervised, help="supervised: train a primary; parl: train the "
                                   "orchestrator of the trained primary --checkpoint (it and its specialists frozen)."),
    agent_dropout: bool = typer.Option(False, help="supervised: fuse a random subset of the specialists per batch, "
                                       "so the primary annotates well with whatever subset an orchestrator picks."),
    checkpoint: Path | None = typer.Option(None, help="parl: the trained (fused) primary directory."),
    split: str | None = typer.Option(None, help="parl: the labelled split to learn from, one the primary did not "
                                     "train on (default: validation)."),
    policy_out: Path | None = typer.Option(None, help="parl: where the policy goes (default: RUN_DIR/orchestrator; "
                                           "serve it with --policy, or copy it to CHECKPOINT/orchestrator)."),
    iterations: int = typer.Option(choices.PARL_ITERATIONS, min=1, help="parl: policy-gradient iterations."),
    lambda1: float = typer.Option(choices.PARL_LAMBDA, min=0,
                                  help="parl: initial weight of r_parallel (annealed to 0)."),
    lambda2: float = typer.Option(choices.PARL_LAMBDA, min=0, help="parl: initial weight of r_finish (annealed to 0)."),
    anneal: float = typer.Option(choices.PARL_ANNEAL, min=0, max=1,
                                 help="parl: share of the iterations over which λ1, λ2 fall to 0 (0: never)."),
    beta_calls: float = typer.Option(choices.PARL_BETA_CALLS, min=0,
                                     help="parl: price of a specialist pass on a column (in columns labelled right)."),
    beta_steps: float = typer.Option(choices.PARL_BETA_STEPS, min=0,
                                     help="parl: price of a critical step beyond the primary's."),
    beta_spawn: float = typer.Option(choices.PARL_BETA_SPAWN, min=0,
                                     help="parl: price of spawning every specialist for a table (pro rata)."),
    spawn_budget: int | None = typer.Option(None, min=0, help="parl: most specialists per table (default: all)."),
    max_deep: int = typer.Option(choices.PARL_MAX_DEEP, min=0, help="parl: most deep steps per column."),
) -> None:
    """Train a primary, alone or fused with specialists (resumes from RUN_DIR's checkpoints), and evaluate it on
    validation; or, with --mode parl, train the orchestrator policy of a trained primary."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.reports import print_scores
    from swarm.trainer.training.primary import RunConfig, run_training
    from swarm.trainer.training.train import TrainConfig

    device = use_devices(device, dtype)
    endpoints = parse_endpoints(specialist or os.environ.get(ENDPOINTS_ENV, "").split(","))
    reports_dir = reports_dir or run_dir
    if mode == TrainMode.parl:
        from swarm.trainer.orchestration.parl import ParlConfig

        parl = ParlConfig(iterations=iterations, lambda1=lambda1, lambda2=lambda2, anneal=anneal,
                          beta_calls=beta_calls, beta_steps=beta_steps, beta_spawn=beta_spawn, max_deep=max_deep,
                          seed=seed,
                          **({"budget": spawn_budget} if spawn_budget is not None else {}))
        _train_policy(checkpoint, data, split, policy_out or run_dir / "orchestrator", reports_dir, parl, endpoints,
                      device)
        return
    try:
        cfg = RunConfig(data=data, run_dir=run_dir, reports_dir=reports_dir, model=model,
                        synthetic_tables=synthetic_tables, synthetic_steps=synthetic_steps,
                        train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                          ckpt_every=ckpt_every, stop_after=stop_after, device=device),
                        fusion=fusion.value if fusion else None, max_specialists=max_specialists,
                        specialist_dirs=specialist_dir,
                        endpoints=endpoints, agent_dropout=agent_dropout)
        scores, model_dir = run_training(cfg)
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    print_scores(scores, f"primary, validation ({model_dir})")
    publish({"micro_f1": scores.micro_f1, "macro_f1": scores.macro_f1})


def _train_policy(checkpoint: Path | None, data: Path, split: str | None, out: Path, reports_dir: Path,
                  parl: ParlConfig, endpoints: dict[str, str], device: str) -> None:
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.orchestration.parl_pipeline import PolicyRunConfig, run_parl

    if checkpoint is None:
        fail("--mode parl needs --checkpoint, the trained primary whose orchestrator is trained")
    try:
        result = run_parl(PolicyRunConfig(checkpoint=checkpoint, data=data, split=split, out=out,
                                          reports_dir=reports_dir, parl=parl, endpoints=endpoints, device=device))
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
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.reports import print_scores, write_json
    from swarm.trainer.training.evaluate import evaluate_dir

    device = use_devices(device, dtype)
    try:
        endpoints = parse_endpoints(specialist or os.environ.get(ENDPOINTS_ENV, "").split(","))
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


def _experiment_config(data: Path, run_dir: Path, model: str, synthetic_tables: int, pretrain_steps: int,
                       specialist_steps: int, primary_steps: int, seeds: int, device: str):
    from swarm.trainer.experiments.fusion import FusionExperimentConfig

    return FusionExperimentConfig(data=data, run_dir=run_dir, model=model, synthetic_tables=synthetic_tables,
                                  pretrain_steps=pretrain_steps, specialist_steps=specialist_steps,
                                  primary_steps=primary_steps, primary_seeds=tuple(range(seeds)), device=device)


SEEDS_HELP = "Primaries trained per row (seeds 0..N-1); rows report the mean and standard deviation."


def _release_default(name: str):
    """A `swarm release` option's default, read from the config class (written once, there)."""
    from swarm.trainer.release import ReleaseConfig

    return ReleaseConfig.model_fields[name].default


def _release_config(data: Path, run_dir: Path, model: str, steps: int, specialist_steps: int, split: list[str],
                    specialist_split: list[str], fusion_share: float, policy_share: float, seed: int,
                    specialist_dir: list[Path], endpoints: dict[str, str], device: str,
                    fusion: str | None = None, max_specialists: int | None = None):
    from swarm.trainer.release import ReleaseConfig

    return ReleaseConfig(data=data, run_dir=run_dir, model=model, steps=steps, specialist_steps=specialist_steps,
                         splits=split or _release_default("splits"), specialist_splits=specialist_split or None,
                         fusion_share=fusion_share, policy_share=policy_share, seed=seed,
                         specialist_dirs=specialist_dir, endpoints=endpoints, device=device,
                         fusion=fusion or _release_default("fusion"), max_specialists=max_specialists)


SPLIT_HELP = "A labelled split the swarm learns from (repeat; default: training and training_columns)."
SPECIALIST_SPLIT_HELP = ("A split whose tables are the specialists' (repeat); the other splits' tables are where the "
                         "primary learns to trust them. Default: a random share of all tables (--fusion-share).")


def release(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory."),
    run_dir: Path = typer.Option(Path("runs/release"), help="Where the released swarm goes: specialists/, model/ "
                                 "(the primary, its policy in model/orchestrator/) and release.json."),
    model: str = typer.Option(_release_default("model"), help="Backbone config: tiny, small or base."),
    steps: int = typer.Option(_release_default("steps"), min=1, help="Optimizer steps of the primary."),
    specialist_steps: int = typer.Option(_release_default("specialist_steps"), min=1),
    split: list[str] = typer.Option([], help=SPLIT_HELP),
    specialist_split: list[str] = typer.Option([], help=SPECIALIST_SPLIT_HELP),
    fusion_share: float = typer.Option(_release_default("fusion_share"), min=0, max=0.95,
                                       help="Share of the tables the specialists never see, where the primary "
                                       "learns how far to trust them (without --specialist-split)."),
    policy_share: float = typer.Option(_release_default("policy_share"), min=0, max=0.95,
                                       help="Share of the tables held out from the primary for the orchestrator "
                                       "policy (0: no policy; every specialist reads every column)."),
    seed: int = typer.Option(0),
    fusion: FusionMode = typer.Option(_release_default("fusion"), help="How the primary fuses the specialists' "
                                      "states."),
    max_specialists: int | None = typer.Option(None, min=0, help="Fuse at most this many of the specialists "
                                               "(default: all; 0: the primary alone)."),
    specialist_dir: list[Path] = typer.Option([], help="Use this trained specialist instead of training them "
                                              "(repeat)."),
    specialist: list[str] = typer.Option(
        [], help=f"Use this specialist server NAME=HOST:PORT instead of training them (repeat; default: "
        f"${ENDPOINTS_ENV})."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Build the released swarm from any SOTAB-format data: specialists (unless given), the primary with honest
    fusion, the orchestrator policy. Stages already built for the same recipe are reused."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.release import build_release

    device = use_devices(device, dtype)
    endpoints = parse_endpoints(specialist or os.environ.get(ENDPOINTS_ENV, "").split(","))
    try:
        cfg = _release_config(data, run_dir, model, steps, specialist_steps, split, specialist_split, fusion_share,
                              policy_share, seed, specialist_dir, endpoints if not specialist_dir else {}, device,
                              fusion.value, max_specialists)
        record = build_release(cfg)
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({k: record[k] for k in ("primary", "policy", "specialists", "tables", "columns",
                                                  "held_out", "seconds")}, indent=2))
    if record["held_out"]:
        publish({"micro_f1": record["held_out"]["swarm"]["micro_f1"],
                 "macro_f1": record["held_out"]["swarm"]["macro_f1"]})


def demo(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory (training splits + validation)."),
    run_dir: Path = typer.Option(Path("runs/demo"), help="The released swarm (reused when already built); serve it "
                                 "again with `swarm up --run-dir RUN_DIR`."),
    reports_dir: Path = typer.Option(Path("reports"), help="Where demo.json, demo.md and demo.png go."),
    model: str = typer.Option(_release_default("model"), help="Backbone config: tiny, small or base."),
    steps: int = typer.Option(_release_default("steps"), min=1, help="Optimizer steps of the primary."),
    specialist_steps: int = typer.Option(_release_default("specialist_steps"), min=1),
    held_out: str = typer.Option("validation", help="The split annotated through the served swarm (never trained "
                                 "on)."),
    seed: int = typer.Option(0),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """The main job on the bundled data: build the released swarm from the training splits, serve it on loopback,
    annotate the held-out tables through the client, compare with the same model in process and the primary alone."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.experiments.demo import DemoConfig, demo_markdown, run_demo

    device = use_devices(device, dtype)
    try:
        release_cfg = _release_config(data, run_dir, model, steps, specialist_steps, [], [],
                                      _release_default("fusion_share"), _release_default("policy_share"), seed, [],
                                      {}, device)
        result = run_demo(DemoConfig(release=release_cfg, split=held_out, reports_dir=reports_dir))
    except (DataError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(demo_markdown(result))
    typer.echo(f"reports: {reports_dir / 'demo.md'}, {reports_dir / 'demo.png'}; serve it again with "
               f"`swarm up --run-dir {run_dir}`")


def fusion_report(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory."),
    run_dir: Path = typer.Option(Path("runs/fusion"), help="Specialists and primaries of the experiment."),
    model: str = typer.Option("tiny", help="Backbone config."),
    synthetic_tables: int = typer.Option(1500),
    pretrain_steps: int = typer.Option(800),
    specialist_steps: int = typer.Option(400),
    primary_steps: int = typer.Option(400),
    seeds: int = typer.Option(2, min=1, help=SEEDS_HELP),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Primary alone vs + 1, 3, all specialists for every fusion mode: reports/fusion.{json,md,png}."""
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.experiments.fusion import run_fusion_experiment

    device = use_devices(device, dtype)
    cfg = _experiment_config(data, run_dir, model, synthetic_tables, pretrain_steps, specialist_steps, primary_steps,
                             seeds, device)
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


def adapt(
    domain: str = typer.Option(..., help="Target domain (model_server/domains.yaml): its labels plus \\[other]."),
    expert: list[str] = typer.Option(
        ..., help="A trained specialist: its directory, or NAME=FOLDER of specialists (repeat; two or more)."
    ),
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset; the domain's validation columns are used."),
    out: Path = typer.Option(Path("runs/adapt"), help="Where the adapted specialist directory is written."),
    reference: Path | None = typer.Option(None, help="A specialist fine-tuned on the domain, scored for comparison."),
    reports_dir: Path = typer.Option(Path("reports")),
    utility_columns: int = typer.Option(200, min=2, help="Labelled columns the swarm's utility is measured on."),
    particles: int = typer.Option(8, min=1),
    iterations: int = typer.Option(20, min=0),
    seed: int = typer.Option(0),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Model Swarms: search the experts' weight space for a specialist of DOMAIN; reports/adapt_DOMAIN.{json,md,png}."""
    from swarm.model_server.model.specialist import specialist_dir
    from swarm.trainer.data.sotab import DataError
    from swarm.trainer.training.adapt import AdaptConfig
    from swarm.trainer.training.adapt import adapt as run_adapt
    from swarm.trainer.training.model_swarms import SwarmConfig

    def expert_path(value: str) -> Path:  # PATH, or NAME=FOLDER: specialist NAME in a folder of them
        name, sep, folder = value.partition("=")
        return specialist_dir(Path(folder), name) if sep else Path(value)

    device = use_devices(device, dtype)
    try:
        cfg = AdaptConfig(data=data, experts=tuple(map(expert_path, expert)), domain=domain, out=out,
                          reports_dir=reports_dir, utility_columns=utility_columns, reference=reference,
                          swarm=SwarmConfig(particles=particles, iterations=iterations, seed=seed), device=device)
        report = run_adapt(cfg)
    except (DataError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    swarm = next(m for m in report["models"] if m["name"] == "Model Swarms")
    publish({"micro_f1": swarm["micro_f1"], "macro_f1": swarm["macro_f1"]})
