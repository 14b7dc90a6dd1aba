"""Parser: source text -> AST, with expected trees."""

import pytest

from kerneldsl.compiler import ast
from kerneldsl.compiler.explain import format_ast
from kerneldsl.compiler.ir import Span
from kerneldsl.compiler.parse import parse


def canon(source: str) -> list[str]:
    """Each statement of a program as canonical text (names, sets, calls, parentheses)."""
    out = []
    for stmt in parse(source).statements:
        text = format_ast(stmt.value)
        out.append(f"{stmt.name} = {text}" if isinstance(stmt, ast.Definition) else text)
    return out


@pytest.mark.parametrize("source, expected", [
    ("a", ["a"]),
    ("a + b * c", ["a + b * c"]),
    ("(a + b) * c", ["(a + b) * c"]),
    ("a + (b + c)", ["a + b + c"]),  # the AST keeps the nesting; canonical text drops redundant parens
    ("matern52({x, y})", ["matern52({x, y})"]),
    ('{"1cycle_max_lr", b.c}' if False else '{"1cycle_max_lr", "b.c", d}', ['{"1cycle_max_lr", "b.c", d}']),
    ("0.3 * a + 0.7 * b", ["0.3 * a + 0.7 * b"]),
    ("fj(lr)\n", ["fj(lr)"]),
    ("# comment only line\nr = a # trailing\n\nr", ["r = a", "r"]),
    ("k = a +\n    b", ["k = a + b"]),
    ("k = a\n  + b\n  * c", ["k = a + b * c"]),
    ("k = fj(\n lr\n)", ["k = fj(lr)"]),
    ("g = {a,\n b,}\nkernel = g", ["g = {a, b}", "kernel = g"]),
])
def test_canonical_text(source, expected):
    assert canon(source) == expected


def test_tree_structure_and_positions():
    program = parse("regime = matern52({e, b}) * fj(lr)\nkernel = regime + arch")
    regime, kernel = program.statements
    assert isinstance(regime, ast.Definition) and regime.name == "regime"
    assert regime.name_span == Span(1, 1, 1, 7)
    product = regime.value
    assert isinstance(product, ast.Product) and len(product.factors) == 2
    call, fj = product.factors
    assert call == ast.Call("matern52", (ast.FeatureSet((ast.Feature("e", False, Span(1, 20, 1, 21)),
                                                         ast.Feature("b", False, Span(1, 23, 1, 24))),
                                                        Span(1, 19, 1, 25)),),
                            Span(1, 10, 1, 26), Span(1, 10, 1, 18))
    assert fj.func == "fj" and fj.args == (ast.Name("lr", Span(1, 32, 1, 34)),)
    assert isinstance(kernel.value, ast.Sum)
    assert [t.name for t in kernel.value.terms] == ["regime", "arch"]
    assert kernel.value.span.line == 2


def test_nested_sum_kept_in_ast():
    (stmt,) = parse("a + (b + c)").statements
    outer = stmt.value
    assert isinstance(outer, ast.Sum) and len(outer.terms) == 2
    assert isinstance(outer.terms[1], ast.Sum)


def test_weighted_terms():
    (stmt,) = parse("0.25 * a + .75 * (b * c)").statements
    w1, w2 = stmt.value.terms
    assert isinstance(w1, ast.Weighted) and w1.weight == 0.25
    assert isinstance(w2.value, ast.Product)


def test_quoted_feature_keeps_name():
    (stmt,) = parse('matern52({"1cycle-max.lr"})').statements
    (feature,) = stmt.value.args[0].features
    assert feature == ast.Feature("1cycle-max.lr", True, Span(1, 11, 1, 26))
