"""The map of the code holds (docs/ARCHITECTURE.md): every module imports only its own floor or lower ones, and no
modules import each other, directly or in a loop. Every import form counts: ``import agripatch.x``, ``from
agripatch.x import y``, ``from agripatch import x``, relative imports, and imports inside functions or under
``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agripatch"

#: Floors, lowest first; a package may import its own floor and lower ones only.
FLOORS = [
    {"errors", "schema", "io", "device", "allocator", "distributed", "resources", "version"},
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


def _module_name(path: Path) -> str:
    parts = ("agripatch",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str:
    """The agripatch module a dotted name lives in (a name imported from a module counts as that module)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imported(module: str, path: Path) -> set[str]:
    """Every agripatch module ``module`` imports, whatever the form."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {_resolve(name) for name in found if name.split(".")[0] == "agripatch"} - {module}


GRAPH = {module: _imported(module, path) for module, path in MODULES.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_is_on_a_floor():
    for path in PACKAGE.iterdir():
        if path.name != "__pycache__" and (path.is_dir() or path.suffix == ".py"):
            _floor(path.name.removesuffix(".py"))


def test_every_import_form_is_seen():
    assert "agripatch.pipeline.core" in GRAPH["agripatch.runtime.cascade"]  # from agripatch.pipeline.core import X
    assert "agripatch.predict.shards" in GRAPH["agripatch.predict.folder"]  # from agripatch.predict import shards
    assert "agripatch.api" in GRAPH["agripatch"]  # inside a function


def test_no_floor_imports_a_higher_one():
    wrong = [f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
             if _floor(_top(target)) > _floor(_top(module)) or (_top(module), _top(target)) in APART]
    assert wrong == []


def test_no_import_cycles():
    """Tarjan's strongly connected components: any with two or more modules is a loop of imports."""
    index, low, stack, on_stack, loops, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert loops == []
