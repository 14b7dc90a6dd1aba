"""The abstract syntax tree of a kernel program: what the user wrote, with positions.

Distinct from lark's parse tree (``parse.py`` converts) and from the intermediate
form (``ir.py``, produced by ``lower.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .ir import Span


@dataclass(frozen=True)
class Feature:
    """One feature name inside ``{...}`` (``quoted`` when written as ``"name"``)."""

    name: str
    quoted: bool
    span: Span


@dataclass(frozen=True)
class FeatureSet:
    """``{a, b, "c-d"}``: a literal set of features (or group names, expanded)."""

    features: tuple[Feature, ...]
    span: Span


@dataclass(frozen=True)
class Name:
    """A reference: a definition, a group, or a feature."""

    name: str
    span: Span


@dataclass(frozen=True)
class Call:
    """``func(args...)``: a base kernel, ``additive`` or ``fj``."""

    func: str
    args: tuple["Expr", ...]
    span: Span
    func_span: Span


@dataclass(frozen=True)
class Sum:
    """``a + b + ...`` as written (nesting from parentheses kept)."""

    terms: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class Weighted:
    """``0.3 * expr``: a fixed weight on one term of a sum."""

    weight: float
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Product:
    """``a * b * ...``."""

    factors: tuple["Expr", ...]
    span: Span


Expr = Union[FeatureSet, Name, Call, Sum, Weighted, Product]


@dataclass(frozen=True)
class Definition:
    """``name = value``."""

    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Result:
    """A bare expression statement: the program's kernel."""

    value: Expr
    span: Span


@dataclass(frozen=True)
class Program:
    statements: tuple[Union[Definition, Result], ...]
    source: str
