"""Imports go one way: contract (swarm.model_server.choices) ← model (swarm.model_server.model) ← serving
(swarm.model_server.serving) ← the commands (swarm.trainer.commands), and the operator depends only on the contract.
Beside the product: the operator's test harness (swarm.testing) depends only on the operator and the contract, the
benchmarks (swarm.bench) may use anything, and nothing of the product imports either. swarm.client is the one
Python client of the annotation API: no other module of the package calls it through the generated stubs.

Read from the source's AST (every import statement, lazy imports inside functions and `if TYPE_CHECKING:` blocks
included, relative imports resolved), so nothing is imported and no torch is needed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "swarm.model_server.choices"
# Source folder -> the package it is installed as (pyproject.toml's package-dir).
PACKAGES = {"model_server": "swarm.model_server", "operator": "swarm.operator", "trainer": "swarm.trainer",
            "client": "swarm.client", "bench": "swarm.bench", "testing": "swarm.testing"}
PRODUCT = ("model_server", "operator", "trainer", "client")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports (for `from X import a`: X and X.a, since `a` may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", modules("model_server/model"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_model_imports_neither_serving_nor_trainer_nor_operator(path: Path) -> None:
    forbidden = ("swarm.model_server.serving", "swarm.trainer", "swarm.operator", "swarm.client")
    assert offending(path, forbidden) == []


@pytest.mark.parametrize("path", modules("model_server/serving"), ids=lambda p: str(p.relative_to(ROOT)))
def test_serving_imports_neither_trainer_nor_operator(path: Path) -> None:
    assert offending(path, ("swarm.trainer", "swarm.operator", "swarm.client")) == []


def test_the_contract_imports_nothing_from_swarm() -> None:
    path = ROOT / "model_server" / "choices.py"
    assert offending(path, ("swarm",)) == []
    assert "torch" not in {m.split(".")[0] for m in imported(path)}


@pytest.mark.parametrize("path", modules("operator"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_operator_depends_only_on_the_contract(path: Path) -> None:
    # `from swarm.model_server import choices` names the package itself as well as the contract; `from
    # swarm.model_server.choices import GROUP` names swarm.model_server.choices.GROUP
    inside = ("swarm.model_server", CONTRACT)
    outside = [
        m for m in offending(path, ("swarm.model_server",)) if m not in inside and not m.startswith(CONTRACT + ".")
    ]
    assert outside == []
    assert offending(path, ("swarm.trainer", "swarm.client")) == []


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", [p for folder in PRODUCT for p in modules(folder)], ids=_id)
def test_the_product_imports_neither_the_benchmarks_nor_the_test_harness(path: Path) -> None:
    assert offending(path, ("swarm.bench", "swarm.testing")) == []


@pytest.mark.parametrize("path", modules("testing"), ids=_id)
def test_the_test_harness_depends_only_on_the_operator_and_the_contract(path: Path) -> None:
    allowed = ("swarm.operator", "swarm.testing", CONTRACT)
    outside = [
        m for m in offending(path, ("swarm",))
        if m != "swarm.model_server" and not any(m == a or m.startswith(a + ".") for a in allowed)
    ]
    assert outside == []


@pytest.mark.parametrize(
    "path",
    [p for folder in (*PRODUCT, "bench", "testing") for p in modules(folder)
     if not p.is_relative_to(ROOT / "client") and not p.is_relative_to(ROOT / "model_server" / "serving")],
    ids=_id,
)
def test_only_the_client_calls_the_annotation_api(path: Path) -> None:
    # the serving layer implements the service (its servicer lives in the same generated module)
    assert offending(path, ("swarm.v1.annotation_pb2_grpc",)) == []


def test_the_layers_exist() -> None:
    """Guards the globs above against a rename that would leave them matching nothing."""
    assert len(modules("model_server/model")) > 10
    assert len(modules("model_server/serving")) > 5
    assert (ROOT / "model_server" / "choices.py").is_file()
    assert len(modules("bench")) > 5
    assert {p.name for p in modules("testing")} >= {"emulator.py", "control_plane.py", "operator_process.py"}
    assert (ROOT / "client" / "annotator.py").is_file()
