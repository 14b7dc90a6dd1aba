"""Semantic checks on the AST: names, groups, definitions, arguments, cycles.

Produces a ``Scope`` (what every name means) that ``lower.py`` consumes; every
problem is a ``KernelError`` pointing at the user's source.
"""

from __future__ import annotations

import reprlib
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import ast
from .errors import KernelError, KernelNameError, did_you_mean, feature_hint
from .ir import Span
from .kinds import BY_FUNCTION

BASE_FUNCTIONS = {function: kind.name for function, kind in BY_FUNCTION.items()}
"""Base-kernel function names (names and aliases of ``kinds.KINDS``) -> kind name."""
SUGAR_FUNCTIONS = ("additive", "fj")
FUNCTIONS = (*BASE_FUNCTIONS, *SUGAR_FUNCTIONS)
DEFAULT_KIND = "matern52"
"""The base kernel of a bare group, feature or feature set used as a kernel."""
RESULT_NAME = "kernel"
ALL_GROUP = "all"
"""The built-in group of every feature. A definition or a ``groups=`` entry of that name replaces it,
and a feature of that name keeps it (then there is no built-in group)."""


class KernelWarning(UserWarning):
    """A suspicious but valid kernel source (e.g. an unused definition)."""


@dataclass(frozen=True)
class Group:
    """A named feature set: from ``groups=`` (``span is None``) or a source definition."""

    name: str
    features: tuple[int, ...]
    span: Span | None


@dataclass
class Scope:
    """What each name of a checked program means."""

    program: ast.Program
    features: tuple[str, ...]
    groups: dict[str, Group] = field(default_factory=dict)
    kernels: dict[str, ast.Definition] = field(default_factory=dict)
    result: ast.Expr | None = None
    result_name: str | None = None
    """``kernel`` when the result is a definition of that name."""
    used: set[str] = field(default_factory=set)

    def error(self, cls, message: str, span: Span | None, hint: str | None = None) -> KernelError:
        if span is None:
            return cls(message, hint=hint)
        return cls(message, source=self.program.source, line=span.line, column=span.column, hint=hint)

    def known_names(self) -> list[str]:
        return [*self.kernels, *self.groups, *self.features]

    def hint(self, name: str, known: Sequence[str]) -> str | None:
        """Every feature named ``<name>_...`` (a choice's one-hot features), else the closest ``known`` name."""
        return feature_hint(name, self.features, known)


def check_features(features: Sequence[str]) -> tuple[str, ...]:
    """Validate the ``features=`` argument: a non-empty list of unique, non-empty strings."""
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise KernelError(f"features must be a list of feature names, got {type(features).__name__}")
    features = tuple(features)
    if not features:
        raise KernelError("features must not be empty: name the input columns of the kernel")
    seen: set[str] = set()
    for i, f in enumerate(features):
        if not isinstance(f, str) or not f:
            raise KernelError(f"feature {i} must be a non-empty string, got {f!r}")
        if f in seen:
            raise KernelError(f"feature '{f}' is listed twice in features")
        seen.add(f)
    return features


def check(program: ast.Program, features: tuple[str, ...],
          groups: Mapping[str, Sequence[str]] | None = None) -> Scope:
    """Resolve and validate every name of ``program``; raise ``KernelError`` on the first problem."""
    scope = Scope(program, features)
    index = {f: i for i, f in enumerate(features)}
    python_groups = check_groups(groups, index)
    defined = {s.name for s in program.statements if isinstance(s, ast.Definition)}
    if ALL_GROUP not in index and ALL_GROUP not in python_groups and ALL_GROUP not in defined:
        python_groups = {ALL_GROUP: features, **python_groups}
    source_groups = _collect_definitions(scope, index, python_groups)
    _resolve_groups(scope, python_groups, source_groups)
    _check_references(scope)
    _check_cycles(scope)
    _warn_unused(scope)
    return scope


def check_groups(groups: Mapping[str, Sequence[str]] | None, index: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
    """Validate the ``groups=`` argument: group name -> names of features or other groups."""
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise KernelError("groups must be a mapping from group name to a list of feature or group names, "
                          f"got {type(groups).__name__} {reprlib.repr(groups)}",
                          hint="e.g. groups={'lr': ['log_lr', 'log_wd']}")
    checked = {}
    for name, members in groups.items():
        if not isinstance(name, str) or not name:
            raise KernelError(f"group names must be non-empty strings, got {name!r}")
        if name in index:
            raise KernelError(f"group '{name}' has the name of a feature; rename the group")
        if name in FUNCTIONS:
            raise KernelError(f"group '{name}' has the name of a kernel function; rename the group")
        if isinstance(members, str) or not isinstance(members, Sequence) or not members:
            raise KernelError(f"group '{name}' must be a non-empty list of feature or group names, "
                              f"got {reprlib.repr(members)}")
        for m in members:
            if not isinstance(m, str):
                raise KernelError(f"group '{name}' must list feature or group names (strings), got {reprlib.repr(m)}")
        checked[name] = tuple(members)
    return checked


def _resolve_groups(scope: Scope, python_groups: dict[str, tuple[str, ...]],
                    source_groups: dict[str, ast.Definition]) -> None:
    """Expand every group into feature columns.

    Groups are declarations: a group may list features and other groups, from
    ``groups=`` or the source, in any order (a cycle is an error).
    """
    index = {f: i for i, f in enumerate(scope.features)}
    declared = [*python_groups, *source_groups]

    def resolve(name: str, path: list[str]) -> Group:
        if name in scope.groups:
            return scope.groups[name]
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + [name])
            first = source_groups.get(path[path.index(name)])
            raise scope.error(KernelError, f"groups refer to each other in a cycle: {cycle}",
                              first.name_span if first is not None else None)
        if name in python_groups:
            group = Group(name, _python_group(scope, name, python_groups[name], index, declared,
                                              lambda member: resolve(member, path + [name])), None)
        else:
            definition = source_groups[name]
            for feat in definition.value.features:  # resolve the groups it lists first
                if not feat.quoted and feat.name not in index and feat.name in declared:
                    resolve(feat.name, path + [name])
            group = Group(name, _feature_set(scope, definition.value), definition.span)
        scope.groups[name] = group
        return group

    for name in declared:
        resolve(name, [])


def _python_group(scope: Scope, name: str, members: tuple[str, ...], index: Mapping[str, int],
                  declared: list[str], resolve) -> tuple[int, ...]:
    """Columns of a group from ``groups=``: its features, and the features of the groups it lists."""
    cols: list[int] = []
    for m in members:
        if m in index:
            member_cols = (index[m],)
        elif m in declared:
            member_cols = resolve(m).features
            scope.used.add(m)
        else:
            raise KernelNameError(f"group '{name}' names '{m}', which is neither a feature nor a group",
                                  hint=scope.hint(m, [*scope.features, *declared]))
        for col in member_cols:
            if col in cols:
                raise KernelError(f"group '{name}' lists feature '{scope.features[col]}' twice")
            cols.append(col)
    return tuple(cols)


def _collect_definitions(scope: Scope, index: dict[str, int],
                         python_groups: Mapping[str, object]) -> dict[str, ast.Definition]:
    """Kernel definitions into ``scope``; returns the group definitions (resolved later, in any order)."""
    statements = scope.program.statements
    first_line: dict[str, int] = {}
    source_groups: dict[str, ast.Definition] = {}
    for i, stmt in enumerate(statements):
        if isinstance(stmt, ast.Result):
            if i != len(statements) - 1:
                raise scope.error(KernelError, "a bare expression must be the last statement: it is the kernel; "
                                  "give this one a name (name = ...)", stmt.span)
            scope.result = stmt.value
            continue
        name = stmt.name
        if name in first_line:
            raise scope.error(KernelError, f"'{name}' is defined twice (first on line {first_line[name]})",
                              stmt.name_span)
        if name in python_groups:
            raise scope.error(KernelError, f"'{name}' is already a group passed in groups=; "
                              "rename the definition", stmt.name_span)
        if name in index:
            raise scope.error(KernelError, f"'{name}' is a feature name; a definition cannot reuse it",
                              stmt.name_span)
        if name in FUNCTIONS:
            raise scope.error(KernelError, f"'{name}' is a kernel function; a definition cannot reuse it",
                              stmt.name_span)
        first_line[name] = stmt.span.line
        if isinstance(stmt.value, ast.FeatureSet) and name != RESULT_NAME:
            # A group (``kernel = {...}`` is the default kernel over a set instead).
            source_groups[name] = stmt
        else:
            scope.kernels[name] = stmt
    if scope.result is not None and RESULT_NAME in scope.kernels:
        raise scope.error(KernelError, f"the program has both a final expression and a definition "
                          f"named '{RESULT_NAME}'; keep one", _span_of(scope.result))
    if scope.result is None:
        if RESULT_NAME not in scope.kernels:
            lines = scope.program.source.splitlines() or [""]
            raise KernelError("the program defines no kernel: end it with an expression or a definition "
                              f"'{RESULT_NAME} = ...'", source=scope.program.source, line=len(lines),
                              column=len(lines[-1]) + 1)
        scope.result_name = RESULT_NAME
        scope.result = scope.kernels[RESULT_NAME].value
    return source_groups


def _feature_set(scope: Scope, fs: ast.FeatureSet) -> tuple[int, ...]:
    """Column indices of a literal ``{...}``; group names inside are expanded."""
    if not fs.features:
        raise scope.error(KernelError, "empty feature set: name at least one feature", fs.span)
    index = {f: i for i, f in enumerate(scope.features)}
    cols: list[int] = []
    for feat in fs.features:
        if feat.name in index:
            members = (index[feat.name],)
        elif not feat.quoted and feat.name in scope.groups:
            members = scope.groups[feat.name].features
            scope.used.add(feat.name)
        else:
            known = [*scope.features, *scope.groups]
            raise scope.error(KernelNameError, f"unknown feature '{feat.name}'", feat.span,
                              scope.hint(feat.name, known))
        for col in members:
            if col in cols:
                raise scope.error(KernelError, f"feature '{scope.features[col]}' appears twice in this set",
                                  feat.span)
            cols.append(col)
    return tuple(cols)


def feature_columns(scope: Scope, expr: ast.Expr, func: str) -> tuple[tuple[int, ...], str]:
    """The columns a function argument denotes, and how the user spelled it."""
    if isinstance(expr, ast.FeatureSet):
        cols = _feature_set(scope, expr)
        return cols, ", ".join(scope.features[c] for c in cols)
    if isinstance(expr, ast.Name):
        if expr.name in scope.groups:
            return scope.groups[expr.name].features, expr.name
        if expr.name in scope.features:
            return (scope.features.index(expr.name),), expr.name
        if expr.name in scope.kernels:
            raise scope.error(KernelError, f"{func}() takes a feature set or group, but '{expr.name}' is a kernel",
                              expr.span, "write the features in braces, e.g. matern52({a, b}), or use a group")
        raise scope.error(KernelNameError, f"unknown group or feature '{expr.name}'", expr.span,
                          scope.hint(expr.name, [*scope.groups, *scope.features]))
    raise scope.error(KernelError, f"{func}() takes a feature set or group, not a kernel expression",
                      _span_of(expr), "write the features in braces, e.g. " + func + "({a, b})")


def _check_references(scope: Scope) -> None:
    """Every name and call resolves, with the right number and kind of arguments."""
    def visit(expr: ast.Expr) -> None:
        if isinstance(expr, ast.Name):
            if expr.name in scope.kernels or expr.name in scope.groups:
                scope.used.add(expr.name)
            elif expr.name not in scope.features:
                hint = scope.hint(expr.name, [*scope.known_names(), *FUNCTIONS])
                raise scope.error(KernelNameError, f"unknown name '{expr.name}': not a definition, group or feature",
                                  expr.span, hint)
        elif isinstance(expr, ast.FeatureSet):
            _feature_set(scope, expr)
        elif isinstance(expr, ast.Call):
            if expr.func not in FUNCTIONS:
                hint = did_you_mean(expr.func, FUNCTIONS) or f"known functions: {', '.join(FUNCTIONS)}"
                raise scope.error(KernelNameError, f"unknown function '{expr.func}'", expr.func_span, hint)
            if len(expr.args) != 1:
                raise scope.error(KernelError, f"{expr.func}() takes exactly one feature set or group, "
                                  f"got {len(expr.args)} arguments", expr.span)
            arg = expr.args[0]
            if isinstance(arg, ast.Name) and arg.name in scope.groups:
                scope.used.add(arg.name)
            feature_columns(scope, arg, expr.func)
        elif isinstance(expr, ast.Weighted):
            raise scope.error(KernelError, "a numeric weight can only stand on a term of a sum, as in "
                              "0.3 * a + 0.7 * b (the output scale is learned)", expr.span)
        elif isinstance(expr, ast.Sum):
            weighted = [isinstance(t, ast.Weighted) for t in expr.terms]
            if any(weighted) and not all(weighted):
                bad = expr.terms[weighted.index(False)]
                raise scope.error(KernelError, "either every term of a sum has a numeric weight or none has",
                                  _span_of(bad))
            if all(weighted):
                for t in expr.terms:
                    if t.weight < 0:
                        raise scope.error(KernelError, "weights must be non-negative", t.span)
                    visit(t.value)
                total = sum(t.weight for t in expr.terms)
                if abs(total - 1.0) > 1e-6:
                    raise scope.error(KernelError, f"fixed weights of a sum must add up to 1, they add up to "
                                      f"{total:g}", expr.span)
            else:
                for t in expr.terms:
                    visit(t)
        elif isinstance(expr, ast.Product):
            for f in expr.factors:
                visit(f)

    for definition in scope.kernels.values():
        visit(definition.value)
    if scope.result_name is None:
        visit(scope.result)


def _references(expr: ast.Expr) -> list[ast.Name]:
    """The kernel-name references inside ``expr`` (not function arguments)."""
    if isinstance(expr, ast.Name):
        return [expr]
    if isinstance(expr, ast.Sum):
        return [r for t in expr.terms for r in _references(t)]
    if isinstance(expr, ast.Product):
        return [r for f in expr.factors for r in _references(f)]
    if isinstance(expr, ast.Weighted):
        return _references(expr.value)
    return []


def _check_cycles(scope: Scope) -> None:
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = path[path.index(name):] + [name]
            raise scope.error(KernelError, f"definitions refer to each other in a cycle: {' -> '.join(cycle)}",
                              scope.kernels[name].name_span)
        state[name] = "active"
        for ref in _references(scope.kernels[name].value):
            if ref.name in scope.kernels:
                visit(ref.name, path + [name])
        state[name] = "done"

    for name in scope.kernels:
        visit(name, [])


def _warn_unused(scope: Scope) -> None:
    reachable: set[str] = set()

    def mark(expr: ast.Expr) -> None:
        for ref in _references(expr):
            if ref.name in scope.kernels and ref.name not in reachable:
                reachable.add(ref.name)
                mark(scope.kernels[ref.name].value)

    if scope.result_name:
        reachable.add(scope.result_name)
    mark(scope.result)
    for name, definition in scope.kernels.items():
        if name not in reachable:
            _warn(scope, f"definition '{name}' is never used", definition.name_span)
    for name, group in scope.groups.items():
        if group.span is not None and name not in scope.used:
            _warn(scope, f"group '{name}' is never used", group.span)


def _warn(scope: Scope, message: str, span: Span) -> None:
    text = str(scope.error(KernelError, message, span))
    warnings.warn(text, KernelWarning, stacklevel=4)


def _span_of(expr: ast.Expr) -> Span:
    return expr.span
