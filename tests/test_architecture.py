"""The package's shape: imports between its modules form no circle and never take another module's private
names; the optimisation loop keeps its functions short and their parameter lists small.

Imports are read with `ast` from the source files (nothing is imported), every import counted: at the top of a
module, inside functions (lazy imports close circles too) and under ``if TYPE_CHECKING``. ``kerneldsl/`` is the
package ``kerneldsl`` and ``compiler/`` is installed as ``kerneldsl.compiler`` (pyproject's package-dir).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"kerneldsl": ROOT / "kerneldsl", "kerneldsl.compiler": ROOT / "compiler"}
LOOP = ROOT / "kerneldsl" / "loop"
MAX_FUNCTION_LINES = 60
"""Lines of a function's code in kerneldsl/loop, its docstring not counted."""
MAX_PARAMETERS = 12
"""Parameters of a function in kerneldsl/loop, ``self``, ``*args`` and ``**kwargs`` counted."""


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _target(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module
    package = module.split(".")
    if modules()[module].name != "__init__.py":
        package.pop()
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports() -> tuple[dict[str, set[str]], list[str]]:
    """The import graph (module -> the package modules it imports) and the private names taken across modules."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    private: list[str] = []
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                graph[module].update(alias.name for alias in node.names if alias.name in known)
            elif isinstance(node, ast.ImportFrom):
                target = _target(module, node)
                if target not in known:
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    graph[module].add(submodule if submodule in known else target)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and submodule not in known:
                        private.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {target} import {alias.name}")
        graph[module].discard(module)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle of imports per strongly connected component of ``graph`` with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_circle(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path through ``component`` that returns to where it started (breadth first from its first module)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & component):
                if other == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if other not in previous:
                    previous[other] = node
                    following.append(other)
        frontier = following
    return sorted(component)


def test_the_graph_is_read():
    graph, _ = imports()
    assert "kerneldsl.loop.study" in graph and "kerneldsl.compiler.lower" in graph
    assert "kerneldsl.loop.trial_log" in graph["kerneldsl.loop.study"]
    assert "kerneldsl.compiler.lower" in graph["kerneldsl.model"]  # compiler/ counted as kerneldsl.compiler


def test_no_import_circles():
    found = cycles(imports()[0])
    assert not found, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in found)


def test_no_private_names_imported_across_modules():
    private = imports()[1]
    assert not private, "private names imported from other modules:\n" + "\n".join(private)


def test_the_checks_can_fail():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _functions():
    for path in sorted(LOOP.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.name}:{node.lineno} {node.name}", node


def _code_lines(node: ast.FunctionDef) -> int:
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    body = node.body[1:] if docstring and len(node.body) > 1 else node.body
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    signature = (node.body[0].lineno - start) if not docstring else (first.lineno - start)
    return signature + (body[-1].end_lineno - body[0].lineno + 1)


def _parameters(node: ast.FunctionDef) -> int:
    arguments = node.args
    return (len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
            + (arguments.vararg is not None) + (arguments.kwarg is not None))


@pytest.mark.parametrize(("measure", "limit"), [(_code_lines, MAX_FUNCTION_LINES), (_parameters, MAX_PARAMETERS)])
def test_loop_functions_are_short_with_few_parameters(measure, limit):
    over = {name: measure(node) for name, node in _functions() if measure(node) > limit}
    assert not over, f"over {limit} ({measure.__name__.strip('_')}): {over}"
