"""`swarm bench` (swarm.trainer.commands.bench): every benchmark it names is a module of swarm.bench that runs as
`python -m swarm.bench.<name>` (a `main(argv)` and a `__main__` guard), read from the source, nothing imported."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from swarm.trainer.commands.bench import BENCHMARKS, NO_QUICK, bench_command, checkout

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_is_a_runnable_module(name: str) -> None:
    spec = importlib.util.find_spec(f"swarm.bench.{name}")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve() == ROOT / "bench" / f"{name}.py"
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and [a.arg for a in mains[0].args.args] == ["argv"]
    assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


def test_the_command_line_of_a_benchmark() -> None:
    for name in BENCHMARKS:
        command = bench_command(name, quick=True)
        assert command[1:3] == ["-m", f"swarm.bench.{name}"]
        assert command[3:] == ([] if name in NO_QUICK else ["--quick"])
        assert bench_command(name, quick=False)[3:] == []


def test_the_benchmarks_belong_to_this_checkout() -> None:
    assert checkout() == ROOT
