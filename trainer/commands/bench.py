"""`swarm bench`: the benchmarks of swarm.bench (bench/), each writing reports/bench_*.json and .md.

Each benchmark runs as its own process, `python -m swarm.bench.<name>`, not in this one: a benchmark sets process
state the next one's numbers would inherit (torch's thread count, Triton's interpreter and fla's autotuning, gRPC
servers and kopf's event loop, the memory it held), some measure this process's threads against their own
subprocesses, and one that crashes or is interrupted (gpu_check's budget sends SIGINT) ends only itself.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import typer

from swarm.trainer.commands.cli_options import fail

BENCHMARKS = ("training", "fusion", "grpc_states", "operator", "serving_load", "orchestrator_throughput",
              "specialists")
NO_QUICK = ("training",)  # takes no --quick


def checkout() -> Path | None:
    """The source checkout the benchmarks belong to (they read its data/ and write its reports/), or None where
    swarm.bench is not installed from one (an editable install)."""
    spec = importlib.util.find_spec("swarm.bench")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).resolve().parents[1]
    return root if (root / "data").is_dir() else None


def bench_command(name: str, quick: bool) -> list[str]:
    """The command line that runs benchmark `name` (a module of swarm.bench)."""
    return [sys.executable, "-m", f"swarm.bench.{name}", *(["--quick"] if quick and name not in NO_QUICK else [])]


def bench(
    only: list[str] = typer.Option([], help=f"Run only these benchmarks (of {', '.join(BENCHMARKS)})."),
    quick: bool = typer.Option(False, help="Smaller runs, where a benchmark supports it."),
) -> None:
    """Run the benchmarks (swarm.bench, each in its own process); each writes reports/bench_*.json and .md."""
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        fail(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if checkout() is None:
        fail("the benchmarks run from a source checkout (pip install -e .): they read its data/ and write reports/")
    for name in only or BENCHMARKS:
        typer.secho(f"== swarm.bench.{name}", bold=True)
        if subprocess.run(bench_command(name, quick)).returncode != 0:
            fail(f"swarm.bench.{name} failed")


def register(app: typer.Typer) -> None:
    app.command()(bench)
