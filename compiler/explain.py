"""Human-readable dump of a program: the parsed AST and the intermediate form."""

from __future__ import annotations

from typing import Mapping, Sequence

from . import ast
from .check import ALL_GROUP
from .errors import KernelNameError
from .ir import KernelIR, Product, Span, Sum
from .lower import compile_ir
from .parse import parse


def format_ast(expr) -> str:
    """An expression as canonical source text (parenthesised where it matters)."""
    if isinstance(expr, ast.Name):
        return expr.name
    if isinstance(expr, ast.FeatureSet):
        return "{" + ", ".join(f'"{f.name}"' if f.quoted else f.name for f in expr.features) + "}"
    if isinstance(expr, ast.Call):
        return f"{expr.func}({', '.join(format_ast(a) for a in expr.args)})"
    if isinstance(expr, ast.Weighted):
        return f"{expr.weight:g} * {_wrap(expr.value, (ast.Sum,))}"
    if isinstance(expr, ast.Sum):
        return " + ".join(format_ast(t) for t in expr.terms)
    if isinstance(expr, ast.Product):
        return " * ".join(_wrap(f, (ast.Sum, ast.Weighted)) for f in expr.factors)
    raise TypeError(f"not an expression: {expr!r}")


def _wrap(expr, kinds) -> str:
    text = format_ast(expr)
    return f"({text})" if isinstance(expr, kinds) else text


def format_ir(ir: KernelIR) -> str:
    """Terms, levels and parameter counts of the intermediate form."""
    lines = [f"features ({len(ir.features)}): {', '.join(ir.features)}", f"terms ({ir.num_terms}):"]
    for i, t in enumerate(ir.terms):
        cols = ", ".join(ir.features[f] for f in t.features)
        lines.append(f"  [{i}] {t.kind}({cols})  lengthscale slots {list(t.lengthscales)}  "
                     f"# {t.label}, line {t.span.line}")
    for depth, level in enumerate(ir.levels, start=1):
        lines.append(f"level {depth}:")
        for node_id in level:
            n = ir.node(node_id)
            if isinstance(n, Product):
                lines.append(f"  [{node_id}] product of {list(n.children)}  # {n.label}")
            elif n.fixed is not None:
                lines.append(f"  [{node_id}] sum of {list(n.children)} fixed weights {list(n.fixed)}  # {n.label}")
            else:
                lines.append(f"  [{node_id}] sum of {list(n.children)} weight slots {list(n.weights)}  # {n.label}")
    lines.append(f"root: [{ir.root}]")
    lines.append(f"parameters: {ir.num_lengthscales} lengthscales + {ir.num_weights} sum weights "
                 f"+ 1 outputscale = {ir.num_lengthscales + ir.num_weights + 1}")
    return "\n".join(lines)


def infer_features(source: str, groups: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The feature names ``source`` uses, in order of first use: every name in an expression or a
    feature set that is not a definition or a group (members of ``groups`` count where the group is used).

    For reading a kernel without its feature list; raises ``KernelSyntaxError`` if it does not parse,
    and ``KernelNameError`` where it uses the built-in group ``all`` (every feature: unknown here).
    """
    program = parse(source)
    groups = dict(groups or {})
    defined = {s.name for s in program.statements if isinstance(s, ast.Definition)} | set(groups)
    found: dict[str, None] = {}

    def use(name: str, quoted: bool = False, span: Span | None = None) -> None:
        if name == ALL_GROUP and not quoted and name not in defined:
            where = {} if span is None else {"source": source, "line": span.line, "column": span.column}
            raise KernelNameError(f"'{ALL_GROUP}' is the built-in group of every feature, and the features are "
                                  "not known here", hint="name them (--features, or --space-module on the command "
                                  "line; features=... from Python)", **where)
        if quoted or name not in defined:
            found.setdefault(name)
        elif name in groups:  # a group from ``groups``: its members, once
            for member in groups.pop(name):
                use(member)

    def visit(expr) -> None:
        if isinstance(expr, ast.Name):
            use(expr.name, span=expr.span)
        elif isinstance(expr, ast.FeatureSet):
            for feature in expr.features:
                use(feature.name, feature.quoted, feature.span)
        elif isinstance(expr, ast.Call):
            for arg in expr.args:
                visit(arg)
        elif isinstance(expr, ast.Sum):
            for term in expr.terms:
                visit(term)
        elif isinstance(expr, ast.Product):
            for factor in expr.factors:
                visit(factor)
        elif isinstance(expr, ast.Weighted):
            visit(expr.value)

    for statement in program.statements:
        visit(statement.value)
    for name in list(groups):  # groups the source never uses still need their features
        use(name)
    return list(found)


def explain(source: str, features: Sequence[str], groups: Mapping[str, Sequence[str]] | None = None) -> str:
    """Parsed program and intermediate form as text; raises the same ``KernelError`` as ``kd.compile``."""
    ir = compile_ir(source, features, groups)
    program = parse(source)
    parsed = []
    for stmt in program.statements:
        text = format_ast(stmt.value)
        parsed.append(f"{stmt.name} = {text}" if isinstance(stmt, ast.Definition) else text)
    return "\n".join(["# parsed", *parsed, "", "# intermediate form", format_ir(ir)])
