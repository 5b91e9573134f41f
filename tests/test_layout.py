"""The import graph of the project: no cycles, and every layer imports only the layers below it.

Layers, top to bottom: experiment scripts and datasets, ``helpers.experiment``, ``helpers.training``
(and beside it ``helpers.inference``), ``helpers.data``, ``models`` (see ``helpers/__init__.py``). Imports are read from the source (every
``import``/``from ... import``, at any depth), so an import inside a function counts too.

Within ``models``: the network file is the network, the registry is data every consumer reads;
the command scripts at the top are thin wrappers of ``helpers.inference``; nothing edits ``sys.path``.
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


def _imports_of_file(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute imports, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_network_file_holds_the_network_only():
    # the registry, the builder, the checkpoint adaptation and the attention table live beside it
    assert import_graph()["models.passt"] == {"models.attention_paths"}


def test_registry_is_data_read_by_every_consumer():
    graph = import_graph()
    assert graph["models.registry"] == set()  # no torch, no other module: data and lookups
    for consumer in ("models.build", "models.labels", "helpers.inference.model", "helpers.inference.cli",
                     "helpers.inference.hear"):
        assert "models.registry" in graph[consumer], consumer
    config_updates = _imports_of_file(ROOT / "config_updates.py")
    assert "models.registry" in config_updates and not any(m.startswith("helpers") for m in config_updates)


@pytest.mark.parametrize("script", ["inference.py", "export.py", "app.py"])
def test_command_scripts_are_thin_wrappers_of_helpers_inference(script):
    imports = _imports_of_file(ROOT / script)
    assert imports and all(m.startswith("helpers.inference.") for m in imports), sorted(imports)


def test_no_script_edits_sys_path():
    """The packages are installed (``pip install -e .``); no script puts the repository on ``sys.path``."""
    folders = [d for d in ROOT.iterdir() if d.is_dir() and not d.is_symlink() and d.name.isidentifier()]
    offenders = []
    for path in sorted([*ROOT.glob("*.py"), *(p for d in folders for p in d.rglob("*.py"))]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"sys.path used in {sorted(set(offenders))}"
