"""CLI commands for data, training and evaluation: `swarm demo|train|eval|synth`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

DEFAULT_DATA = Path("../shared/data/sotab-v2-sample")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command(name="eval")(evaluate)
    app.command()(synth)
    app.command()(demo)
    app.command()(memory)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def train(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory (training + validation splits)."),
    run_dir: Path = typer.Option(Path("runs/train"), help="Where checkpoints and the final model go."),
    model: str = typer.Option("small", help="Backbone config: tiny, small or base."),
    steps: int = typer.Option(1500, help="Optimizer steps on the real training columns."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(2e-3),
    synthetic_tables: int = typer.Option(0, help="Synthetic tables generated for pre-training (0: none)."),
    synthetic_steps: int = typer.Option(0, help="Pre-training steps on synthetic tables."),
    seed: int = typer.Option(0),
    ckpt_every: int = typer.Option(100, help="Checkpoint every N steps (and on SIGTERM/SIGINT)."),
    reports_dir: Path = typer.Option(Path("reports"), help="Where metrics.json and the per-class report go."),
    stop_after: int | None = typer.Option(None, hidden=True),
) -> None:
    """Train the primary alone (resumes from RUN_DIR's checkpoints) and evaluate it on validation."""
    from swarm.trainer.pipeline import BaselineConfig, run_baseline
    from swarm.trainer.reports import print_scores
    from swarm.trainer.sotab import DataError
    from swarm.trainer.train import TrainConfig

    cfg = BaselineConfig(data=data, run_dir=run_dir, reports_dir=reports_dir, model=model,
                         synthetic_tables=synthetic_tables, synthetic_steps=synthetic_steps,
                         train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                           ckpt_every=ckpt_every, stop_after=stop_after))
    try:
        scores, model_dir = run_baseline(cfg)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
    print_scores(scores, f"primary alone, validation ({model_dir})")


def evaluate(
    data: Path = typer.Option(..., help="Any directory in the SOTAB CTA format (a split, or splits)."),
    checkpoint: Path = typer.Option(..., help="A trained model directory (model.safetensors + model.json)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    split: str | None = typer.Option(None, help="Which split when DATA holds several (default: validation)."),
) -> None:
    """Evaluate a trained primary: micro/macro-F1, per-class F1, hard classes."""
    from swarm.trainer.evaluate import evaluate_dir
    from swarm.trainer.reports import print_scores, write_json
    from swarm.trainer.sotab import DataError

    try:
        scores = evaluate_dir(checkpoint, data, split)
    except (DataError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    payload = scores.to_dict()
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
    from swarm.trainer.sotab import load_split
    from swarm.trainer.synth import table_stats, write_synthetic

    write_synthetic(out, tables, seed)
    split = load_split(out)
    typer.echo(f"wrote {len(split.tables)} tables, {len(split.columns)} labelled columns to {out}")
    typer.echo(json.dumps(table_stats(list(split.tables.values())), indent=2))


def demo(
    data: Path = typer.Option(DEFAULT_DATA, help="SOTAB-format dataset directory."),
    run_dir: Path = typer.Option(Path("runs/demo"), help="Checkpoints and models; the primary ends in RUN_DIR/model."),
    model: str = typer.Option("small", help="Backbone config."),
    steps: int = typer.Option(1200, help="Primary training steps on real data."),
    synthetic_tables: int = typer.Option(1500),
    synthetic_steps: int = typer.Option(300),
) -> None:
    """The main job on the bundled data: train and evaluate the baseline, print and write the results."""
    train(data=data, run_dir=run_dir, model=model, steps=steps, batch_size=32, lr=2e-3,
          synthetic_tables=synthetic_tables, synthetic_steps=synthetic_steps, seed=0, ckpt_every=100,
          reports_dir=Path("reports"), stop_after=None)


def memory(
    specialist: Path | None = typer.Option(None, help="A trained specialist directory (default: an untrained one)."),
    config: str = typer.Option("small", help="Config of the untrained specialist when no directory is given."),
    dtype: str = typer.Option("bfloat16", help="Serving dtype: float32, bfloat16 or float16."),
    batch: int = typer.Option(32, help="Columns per request."),
) -> None:
    """Resident bytes of a frozen specialist (weights + one batch of activations): a SpecialistPool's residentBytes."""
    import torch

    from swarm.model_server.memory import specialist_resident_bytes
    from swarm.model_server.specialist import Specialist, domains, untrained

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        _fail(f"unknown dtype {dtype!r}")
    spec = Specialist.load(specialist) if specialist else untrained(next(iter(domains())), config)
    estimate = specialist_resident_bytes(spec.model.backbone, torch_dtype, batch, head=spec.model.head)
    typer.echo(json.dumps({"specialist": spec.name, "config": spec.config.name, "dtype": dtype, "batch": batch}
                          | estimate.to_dict(), indent=2))
