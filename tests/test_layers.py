"""The map of the code holds: every module imports only its own floor or lower ones (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agripatch"

#: Floors, lowest first; a package may import its own floor and lower ones only.
FLOORS = [
    {"errors", "schema", "io", "device", "distributed", "resources"},
    {"data"},
    {"models"},
    {"pipeline"},
    {"runtime"},
    {"recipes", "engine", "predict"},
    {"export"},
    {"api", "demo", "cli", "__main__", "__init__"},
]
#: Same-floor packages that must not import each other.
APART = {("predict", "engine"), ("engine", "predict")}


def _floor(name: str) -> int:
    for index, floor in enumerate(FLOORS):
        if name in floor:
            return index
    raise AssertionError(f"agripatch.{name} is on no floor: add it to FLOORS here and to docs/ARCHITECTURE.md")


def _imports() -> list[tuple[str, str, str]]:
    """(importing file, its top-level package, imported top-level package) for every agripatch import."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "agripatch" and len(parts) > 1:
                    found.append((str(rel), own, parts[1]))
    return found


def test_every_package_is_on_a_floor():
    for path in PACKAGE.iterdir():
        if path.name != "__pycache__" and (path.is_dir() or path.suffix == ".py"):
            _floor(path.name.removesuffix(".py"))


def test_no_floor_imports_a_higher_one():
    wrong = [f"{file} imports agripatch.{target}" for file, own, target in _imports()
             if _floor(target) > _floor(own) or (own, target) in APART]
    assert wrong == []
