"""`swarm bench`: the benchmarks under bench/, each writing reports/bench_*.json and .md."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from swarm.trainer.commands.cli_options import fail

BENCHMARKS = ("training", "fusion", "grpc_states", "operator", "serving_load", "orchestrator_throughput",
              "specialists")


def bench(
    only: list[str] = typer.Option([], help=f"Run only these benchmarks (of {', '.join(BENCHMARKS)})."),
    quick: bool = typer.Option(False, help="Smaller runs, where a benchmark supports it."),
) -> None:
    """Run the benchmark scripts under bench/ (a source checkout); each writes reports/bench_*.json and .md."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        fail(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if not (root / "bench").is_dir():
        fail(f"{root / 'bench'} not found: benchmarks run from a source checkout")
    for name in only or BENCHMARKS:
        args = [sys.executable, str(root / "bench" / f"{name}.py")]
        if quick and name != "training":
            args.append("--quick")
        typer.secho(f"== bench/{name}.py", bold=True)
        if subprocess.run(args, cwd=root).returncode != 0:
            fail(f"bench/{name}.py failed")


def register(app: typer.Typer) -> None:
    app.command()(bench)
