"""Checked AST -> ``KernelIR``, as one readable list of named passes.

    parse -> check -> expand sugar into a graph -> flatten sums and products
          -> number nodes into levels -> lay out parameters

Every pass is a plain function; ``compile_ir`` runs them in order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import ast
from .check import BASE_FUNCTIONS, DEFAULT_KIND, Scope, check, check_features, feature_columns
from .ir import KernelIR, Product, Span, Sum, Term
from .parse import parse


# --- the graph the passes work on (private to lowering) ---------------------------------
@dataclass(eq=False)
class _Term:
    kind: str
    cols: tuple[int, ...]
    label: str
    span: Span


@dataclass(eq=False)
class _Sum:
    children: list
    weights: list[float] | None  # None: learned
    label: str
    span: Span
    named: bool = False


@dataclass(eq=False)
class _Product:
    children: list
    label: str
    span: Span
    named: bool = False


_Node = _Term | _Sum | _Product


@dataclass
class _Expander:
    """Pass state: AST -> graph, with definitions and group kernels built once each."""

    scope: Scope
    built: dict[str, _Node] = field(default_factory=dict)

    def definition(self, name: str) -> _Node:
        if name not in self.built:
            node = self.expr(self.scope.kernels[name].value, owner=name)
            if isinstance(node, (_Sum, _Product)) and not node.named:
                node.named, node.label = True, name
            self.built[name] = node
        return self.built[name]

    def shared_default(self, name: str, cols: tuple[int, ...], span: Span) -> _Node:
        """A bare group or feature used as a kernel: one default term per name."""
        key = f"\0{name}"
        if key not in self.built:
            self.built[key] = _Term(DEFAULT_KIND, cols, name, span)
        return self.built[key]

    def expr(self, expr: ast.Expr, owner: str | None) -> _Node:
        prefix = f"{owner}/" if owner else ""
        if isinstance(expr, ast.Name):
            if expr.name in self.scope.kernels:
                return self.definition(expr.name)
            cols, spelling = feature_columns(self.scope, expr, DEFAULT_KIND)
            return self.shared_default(spelling, cols, expr.span)
        if isinstance(expr, ast.FeatureSet):
            cols, spelling = feature_columns(self.scope, expr, DEFAULT_KIND)
            return _Term(DEFAULT_KIND, cols, f"{prefix}{DEFAULT_KIND}({spelling})", expr.span)
        if isinstance(expr, ast.Call):
            return self.call(expr, prefix, owner)
        if isinstance(expr, ast.Sum):
            if isinstance(expr.terms[0], ast.Weighted):
                children = [self.expr(t.value, owner) for t in expr.terms]
                weights = [t.weight for t in expr.terms]
            else:
                children, weights = [self.expr(t, owner) for t in expr.terms], None
            return _Sum(children, weights, f"{prefix}sum@{expr.span.line}:{expr.span.column}", expr.span)
        if isinstance(expr, ast.Product):
            children = [self.expr(f, owner) for f in expr.factors]
            return _Product(children, f"{prefix}product@{expr.span.line}:{expr.span.column}", expr.span)
        raise AssertionError(f"unchecked expression reached lowering: {expr!r}")

    def call(self, call: ast.Call, prefix: str, owner: str | None) -> _Node:
        cols, spelling = feature_columns(self.scope, call.args[0], call.func)
        if call.func in BASE_FUNCTIONS:
            kind = BASE_FUNCTIONS[call.func]
            return _Term(kind, cols, f"{prefix}{kind}({spelling})", call.span)
        features = self.scope.features
        singles = [_Term(DEFAULT_KIND, (c,), f"{prefix}{DEFAULT_KIND}({features[c]})", call.span) for c in cols]
        if call.func == "additive":
            if len(singles) == 1:
                return singles[0]
            return _Sum(singles, None, f"{prefix}additive({spelling})", call.span)
        # fj(g) = additive(g) + g; for one feature both are the same kernel.
        joint = (self.shared_default(spelling, cols, call.span) if isinstance(call.args[0], ast.Name)
                 else _Term(DEFAULT_KIND, cols, f"{prefix}{DEFAULT_KIND}({spelling})", call.span))
        if len(cols) == 1:
            return joint
        return _Sum([*singles, joint], None, f"{prefix}fj({spelling})", call.span)


# --- passes --------------------------------------------------------------------------------
def expand(scope: Scope) -> tuple[_Node, dict[str, _Node]]:
    """AST -> graph: sugar (``fj``, ``additive``, bare groups) becomes terms, sums and products.

    Returns the root and the node of every definition that was reached.
    """
    expander = _Expander(scope)
    if scope.result_name:
        root = expander.definition(scope.result_name)
    else:
        root = expander.expr(scope.result, owner=None)
    return root, {name: node for name, node in expander.built.items() if not name.startswith("\0")}


def flatten(root: _Node) -> _Node:
    """Merge anonymous sums into parent sums and anonymous products into parent products.

    Named definitions stay nodes of their own: they are shared. Learned and fixed
    sums merge only with their own kind (fixed weights multiply).
    """
    done: set[int] = set()

    def visit(node: _Node) -> None:
        if id(node) in done or isinstance(node, _Term):
            return
        done.add(id(node))
        for child in node.children:
            visit(child)
        if isinstance(node, _Sum):
            children, weights = [], []
            own = node.weights or [None] * len(node.children)
            for child, w in zip(node.children, own):
                if (isinstance(child, _Sum) and not child.named
                        and (child.weights is None) == (node.weights is None)):
                    children += child.children
                    weights += [w * cw for cw in child.weights] if child.weights else [None] * len(child.children)
                else:
                    children.append(child)
                    weights.append(w)
            node.children = children
            node.weights = None if node.weights is None else weights
        else:
            children = []
            for child in node.children:
                if isinstance(child, _Product) and not child.named:
                    children += child.children
                else:
                    children.append(child)
            node.children = children

    visit(root)
    return root


@dataclass
class _Numbered:
    terms: list[_Term]
    composites: list[_Node]
    levels: list[list[int]]
    ids: dict[int, int]


def number(root: _Node) -> _Numbered:
    """Give every node an id: terms first, then composites by level (each level reads only earlier ones)."""
    terms: list[_Term] = []
    depth: dict[int, int] = {}
    order: list[_Node] = []

    def visit(node: _Node) -> int:
        if id(node) in depth:
            return depth[id(node)]
        if isinstance(node, _Term):
            terms.append(node)
            depth[id(node)] = 0
        else:
            depth[id(node)] = 1 + max(visit(c) for c in node.children)
            order.append(node)
        return depth[id(node)]

    visit(root)
    composites = sorted(order, key=lambda n: depth[id(n)])  # stable: post-order within a level
    ids = {id(t): i for i, t in enumerate(terms)}
    ids.update({id(n): len(terms) + i for i, n in enumerate(composites)})
    levels: dict[int, list[int]] = {}
    for n in composites:
        levels.setdefault(depth[id(n)], []).append(ids[id(n)])
    return _Numbered(terms, composites, [levels[d] for d in sorted(levels)], ids)


def _unique(labels: list[str]) -> list[str]:
    """Suffix repeated labels with #2, #3, ... so that parameter names are unique."""
    counts = Counter(labels)
    seen: Counter = Counter()
    out = []
    for label in labels:
        seen[label] += 1
        out.append(label if counts[label] == 1 else f"{label}#{seen[label]}")
    return out


def _short(label: str, owner_label: str) -> str:
    """A child's label relative to its parent's definition (drop a shared ``owner/`` prefix)."""
    owner = owner_label.split("/", 1)[0] + "/"
    return label[len(owner):] if label.startswith(owner) else label


_AUTO_LABEL_MAX = 48


def _composite_label(node: _Node, label_of: dict[int, str]) -> str:
    """Anonymous sums and products are named after their children when that stays short."""
    if node.named or "@" not in node.label:
        return node.label
    owner = node.label.split("/", 1)[0] + "/" if "/" in node.label else ""
    op = "*" if isinstance(node, _Product) else "+"
    text = op.join(_short(label_of[id(c)], node.label) for c in node.children)
    if isinstance(node, _Sum):
        text = f"({text})"
    return f"{owner}{text}" if len(text) <= _AUTO_LABEL_MAX else node.label


def layout(graph: _Numbered, scope: Scope, root: _Node, definitions: dict[str, _Node]) -> KernelIR:
    """Assign lengthscale and weight slots with readable names, and build the IR."""
    features = scope.features
    term_labels = _unique([t.label for t in graph.terms])
    terms, ls_names = [], []
    for term, label in zip(graph.terms, term_labels):
        slots = tuple(range(len(ls_names), len(ls_names) + len(term.cols)))
        ls_names += [f"{label}.lengthscale[{features[c]}]" for c in term.cols]
        terms.append(Term(term.kind, term.cols, slots, label, term.span))

    label_of = {id(t): lab for t, lab in zip(graph.terms, term_labels)}
    for node in graph.composites:  # children come first, so their labels are known
        label_of[id(node)] = _composite_label(node, label_of)
    node_labels = _unique([label_of[id(n)] for n in graph.composites])
    label_of.update({id(n): lab for n, lab in zip(graph.composites, node_labels)})
    nodes, w_names = [], []
    for node, label in zip(graph.composites, node_labels):
        children = tuple(graph.ids[id(c)] for c in node.children)
        if isinstance(node, _Product):
            nodes.append(Product(children, label, node.span))
            continue
        if node.weights is not None:
            nodes.append(Sum(children, (), tuple(node.weights), label, node.span))
            continue
        child_names = _unique([_short(label_of[id(c)], label) for c in node.children])
        slots = tuple(range(len(w_names), len(w_names) + len(children)))
        w_names += [f"{label}.weight[{c}]" for c in child_names]
        nodes.append(Sum(children, slots, None, label, node.span))

    order = [s.name for s in scope.program.statements if isinstance(s, ast.Definition)]
    named = [(name, graph.ids[id(definitions[name])]) for name in order if name in definitions]
    return KernelIR(features=features, terms=tuple(terms), nodes=tuple(nodes),
                    levels=tuple(tuple(level) for level in graph.levels), root=graph.ids[id(root)],
                    lengthscale_names=tuple(ls_names), weight_names=tuple(w_names),
                    definitions=tuple(named), source=scope.program.source, root_span=root.span)


def compile_ir(source: str, features: Sequence[str],
               groups: Mapping[str, Sequence[str]] | None = None) -> KernelIR:
    """Run every pass: kernel-language source -> ``KernelIR``. Raises ``KernelError``."""
    features = check_features(features)
    program = parse(source)
    scope = check(program, features, groups)
    root, definitions = expand(scope)
    root = flatten(root)
    if isinstance(root, (_Sum, _Product)) and not root.named:
        root.label = "kernel"
    return layout(number(root), scope, root, definitions)
