"""The import graph of the project: no cycles, and every layer imports only the layers below it.

Layers, top to bottom: experiment scripts and datasets, ``helpers.experiment``, ``helpers.training``
(and beside it ``helpers.inference``), ``helpers.data``, ``models`` (see ``helpers/__init__.py``). Imports are read from the source (every
``import``/``from ... import``, at any depth), so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "helpers")

#: what each layer may import from the project (besides itself)
ALLOWED = {
    "models": {"models"},
    "helpers.data": {"helpers.data"},
    "helpers.training": {"helpers.training", "helpers.data", "models"},
    "helpers.inference": {"helpers.inference", "helpers.data", "models"},
    "helpers.experiment": {"helpers.experiment", "helpers.training", "helpers.data", "models"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from pkg import mod`` resolves to ``pkg.mod`` when it exists)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    names = set(modules)
    graph = {}
    for name, path in modules.items():
        # a package's own __init__ is not an import edge (Python runs it anyway)
        graph[name] = {m for m in imports_of(path, names) if m != name and not name.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    graph = import_graph()
    for module, targets in graph.items():
        if module == layer or module.startswith(layer + "."):
            wrong = {t for t in targets if not any(t == a or t.startswith(a + ".") for a in ALLOWED[layer])}
            assert not wrong, f"{module} imports {sorted(wrong)}, above or beside its layer"


def test_checkpoint_reading_knows_no_architecture():
    reading = {"models.checkpoints", "models.checkpoint_types", "models.safetensors_file"}
    graph = import_graph()
    for module in reading:
        assert graph[module] <= reading, f"{module} imports {sorted(graph[module] - reading)}"
