"""`swarm release` and `swarm demo`: build the released swarm (and, for the demo, serve and score it).

Their options come from ReleaseConfig and DemoConfig (`config_options`): defaults and help are the configs'.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from swarm.trainer.commands.cli_options import (
    DEMO_RUN_DIR,
    DEVICE_OPTION,
    ENDPOINTS_ENV,
    PRECISION_OPTION,
    FusionMode,
    Precision,
    endpoints_or_env,
    fail,
    publish,
    use_devices,
)
from swarm.trainer.commands.config_options import DATA_FLAG, ConfigArgs, Flag, config_options
from swarm.trainer.experiments.demo import DemoConfig
from swarm.trainer.release import ReleaseConfig


@config_options("release", ReleaseConfig, (
    "data", "run_dir", "model", "steps", "specialist_steps", "splits", "specialist_splits", "fusion_share",
    "policy_share", "seed", "fusion", "max_specialists", "specialist_dirs"), flags={
    "data": DATA_FLAG, "splits": Flag("--split"), "specialist_splits": Flag("--specialist-split"),
    "fusion": Flag(type=FusionMode), "specialist_dirs": Flag("--specialist-dir")})
def release(
    release: ConfigArgs[ReleaseConfig],
    specialist: list[str] = typer.Option(
        [], help=f"Use this specialist server NAME=HOST:PORT instead of training them (repeat; default: "
        f"${ENDPOINTS_ENV})."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Build the released swarm from any SOTAB-format data: specialists (unless given), the primary with honest
    fusion, the orchestrator policy. Stages already built for the same recipe are reused."""
    from swarm.model_server.model.tables import DataError
    from swarm.trainer.release import build_release

    device = use_devices(device, dtype)
    endpoints = endpoints_or_env(specialist)
    cfg = release.build(endpoints={} if release.values["specialist_dirs"] else endpoints, device=device)
    try:
        record = build_release(cfg)
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({k: record[k] for k in ("primary", "policy", "specialists", "tables", "columns",
                                                  "held_out", "seconds")}, indent=2))
    if record["held_out"]:
        publish({"micro_f1": record["held_out"]["swarm"]["micro_f1"],
                 "macro_f1": record["held_out"]["swarm"]["macro_f1"]})


@config_options("release", ReleaseConfig, ("data", "model", "steps", "specialist_steps", "seed"),
                flags={"data": DATA_FLAG})
@config_options("demo", DemoConfig, ("split", "reports_dir"), flags={"split": Flag("--held-out")})
def demo(
    *,
    release: ConfigArgs[ReleaseConfig],
    run_dir: Path = typer.Option(DEMO_RUN_DIR, help="The released swarm (reused when already built); serve it "
                                 "again with `swarm up --run-dir RUN_DIR`."),
    demo: ConfigArgs[DemoConfig],
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """The main job on the bundled data: build the released swarm from the training splits, serve it on loopback,
    annotate the held-out tables through the client, compare with the same model in process and the primary alone."""
    from swarm.model_server.model.tables import DataError
    from swarm.trainer.experiments.demo import demo_markdown, run_demo

    device = use_devices(device, dtype)
    cfg = demo.build(release=release.build(run_dir=run_dir, device=device))
    try:
        result = run_demo(cfg)
    except (DataError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(demo_markdown(result))
    typer.echo(f"reports: {cfg.reports_dir / 'demo.md'}, {cfg.reports_dir / 'demo.png'}; serve it again with "
               f"`swarm up --run-dir {run_dir}`")


def register(app: typer.Typer) -> None:
    app.command()(release)
    app.command()(demo)
