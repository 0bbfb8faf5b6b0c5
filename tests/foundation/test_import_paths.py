"""One import path per name: `from swarm.X import name` must name the module that defines `name` (a def, a class,
an assignment), not one that merely imports it from elsewhere. A package's `__init__` may re-export (that is its
curated API, e.g. swarm.client), and so may a module that lists the name in `__all__`.

Read from the AST of every module of the package (lazy imports included), mapping each `swarm.*` module to its
file through pyproject.toml's package-dir; nothing is imported."""
from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@cache
def package_dirs() -> dict[str, Path]:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    return {package: ROOT / folder for package, folder in setup["package-dir"].items()}


def source_of(module: str) -> Path | None:
    """The file of a `swarm.*` module, or None for anything else (a subpackage without `__init__`, a stub)."""
    for package, folder in sorted(package_dirs().items(), key=lambda item: -len(item[0])):
        if module == package or module.startswith(package + "."):
            base = folder.joinpath(*module[len(package) + 1:].split(".")) if module != package else folder
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
    return None


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The module's own statements, those under `if`/`try`/`with` included (`if TYPE_CHECKING:`), not those inside
    functions or classes (a function's lazy import is not a name of the module)."""
    found: list[ast.stmt] = []
    for node in body:
        found.append(node)
        if isinstance(node, ast.If | ast.With | ast.Try):
            nested = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                      *(s for handler in getattr(node, "handlers", []) for s in handler.body)]
            found.extend(_module_level(nested))
    return found


@cache
def names_of(path: Path) -> tuple[frozenset[str], frozenset[str], bool]:
    """(names the module defines at top level, names it imports there, whether it re-exports through `__all__`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defined: set[str] = set()
    imported: set[str] = set()
    exported = False
    for node in _module_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        defined.add(leaf.id)
                        exported |= leaf.id == "__all__"
        elif isinstance(node, ast.ImportFrom | ast.Import):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(defined), frozenset(imported), exported


def python_files() -> list[Path]:
    return sorted({p for folder in package_dirs().values() for p in folder.rglob("*.py")} |
                  set((ROOT / "tests").rglob("*.py")) | set((ROOT / "bench").rglob("*.py")))


def second_hand_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("swarm."):
            continue
        source = source_of(node.module or "")
        if source is None or source.name == "__init__.py":
            continue
        defined, imported, exported = names_of(source)
        for alias in node.names:
            if alias.name not in defined and alias.name in imported and not exported:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}")
    return found


def test_every_name_is_imported_from_the_module_that_defines_it() -> None:
    found = [line for path in python_files() for line in second_hand_imports(path)]
    assert found == [], "\n".join(found)
