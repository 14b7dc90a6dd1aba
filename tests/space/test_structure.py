"""The space package's modules import each other without a circle and without private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import kerneldsl as kd

PACKAGE = Path(kd.__file__).resolve().parent / "space"


def imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name)} of every relative import in the package, function-level ones too."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE.glob("*.py"):
        module = path.stem
        found[module] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                found[module] |= {(node.module, alias.name) for alias in node.names}
    return found


def test_no_import_circle():
    graph = {m: {target for target, _ in deps if target != m} for m, deps in imports().items() if m != "__init__"}

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import circle: " + " -> ".join(path[path.index(module):] + [module])
        for target in graph.get(module, ()):
            visit(target, path + [module])

    for module in graph:
        visit(module, [])
    assert "space" not in {t for t, _ in imports()["sampling"]} | {t for t, _ in imports()["combinations"]}


def test_no_private_name_crosses_a_module():
    private = sorted((m, t, n) for m, deps in imports().items() for t, n in deps
                     if n.startswith("_") and not n.startswith("__"))
    assert private == []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                # self.space._x: another object's private attribute
                assert not (node.attr.startswith("_") and not node.attr.startswith("__")), \
                    f"{path.name}:{node.lineno}: {ast.unparse(node)}"


def test_space_offers_its_neighbours_public_methods():
    sgd = lambda c: c["opt"] == "sgd"  # noqa: E731
    space = kd.Space([kd.Choice("opt", ["adam", "sgd"]), kd.Scalar("momentum", 0.0, 1.0, condition=sgd)])
    assert space.conditional and not kd.Space([kd.Scalar("x", 0.0, 1.0)]).conditional
    assert space.parameter_active(1, {"opt": "sgd"}, {"opt"}) is True
    assert space.parameter_active(1, {"opt": "adam"}, {"opt"}) is False
    assert space.parameter_active(1, {}, set()) is None  # opt not decided yet
    assert space.parameter_active(0, {}, set()) is True
    X = torch.zeros(3, 2)
    assert space.check_width(X) is X
    with pytest.raises(kd.ConfigError, match=r"last dimension must be 2 \(coordinates \['opt', 'momentum'\]\)"):
        space.check_width(torch.zeros(3, 3))
