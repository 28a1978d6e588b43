"""The import graph of the product's packages (an AST walk, no imports run): no module circle, and
imports only go downwards — `modules`, `datamodules` -> `training` -> `tuning` -> `service`.

Every import counts, also one inside a function: a lazy import is still a dependency, and
`training/fit.py` <-> `training/ray_train.py` was a circle made of lazy imports. Imports under
`if TYPE_CHECKING:` count for the layers (naming a type from a higher layer is an upward dependency)
but not for circles: they never run, and a config type named in a reader's annotations is no circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"modules": 0, "datamodules": 0, "training": 1, "tuning": 2, "service": 3}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return inside


def import_graph(root: Path, packages: Iterable[str], type_checking: bool = True) -> dict[str, set[str]]:
    """{module: the project modules it imports} for every .py file of `packages` under `root`
    (without the imports under `if TYPE_CHECKING:` when `type_checking` is False)."""
    files = {module_name(root, path): path for package in packages for path in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        tree = ast.parse(path.read_text(), str(path))
        skipped = set() if type_checking else _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for candidate in candidates:
                # the longest project module the import names: `from a.b import c` is a.b.c when c is a module
                while candidate and candidate not in files:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    return sorted(f"{source} imports {target}" for source, targets in graph.items() for target in targets
                  if layers[target.split(".")[0]] > layers[source.split(".")[0]])


def test_the_product_has_no_import_circle():
    assert circles(import_graph(REPO, LAYERS, type_checking=False)) == []


def test_imports_only_go_down_the_layers():
    assert upward_imports(import_graph(REPO, LAYERS), LAYERS) == []


def test_the_graph_sees_every_package_and_lazy_imports():
    graph = import_graph(REPO, LAYERS)
    assert {name.split(".")[0] for name in graph} == set(LAYERS)
    assert "training.ray_train" in graph["training.fit"]  # imported inside fit()
    assert "modules.families" in graph["training.config"]


@pytest.fixture
def bad_tree(tmp_path):
    """`low` imports `high` inside a function (upward), `high.a` <-> `high.b` through a relative import, and
    `high.c` <-> `high.d` only through a type-checking import."""
    for folder, files in {"low": {"__init__.py": "", "core.py": "def f():\n    from high.a import x\n"},
                          "high": {"__init__.py": "", "a.py": "from high import b\nx = 1\n",
                                   "b.py": "from .a import x\n", "c.py": "import high.d\n",
                                   "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                           "    from high import c\n"}}.items():
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(text)
    return tmp_path


def test_the_check_finds_a_circle_and_an_upward_import(bad_tree):
    graph = import_graph(bad_tree, ["low", "high"])
    assert circles(graph) == [["high.a", "high.b"], ["high.c", "high.d"]]
    assert circles(import_graph(bad_tree, ["low", "high"], type_checking=False)) == [["high.a", "high.b"]]
    assert upward_imports(graph, {"low": 0, "high": 1}) == ["low.core imports high.a"]
