"""Hypothesis strategies: random valid kernel programs (source text) and their inputs."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from kerneldsl.compiler.kinds import BY_FUNCTION

KINDS = tuple(BY_FUNCTION)
"""Every base-kernel function of the language: each kind's name and aliases, from the registry."""


@dataclass(frozen=True)
class Program:
    """A random valid program with everything ``kd.compile`` needs."""

    source: str
    features: tuple[str, ...]
    groups: dict

    def compile(self, **kwargs):
        import kerneldsl as kd
        return kd.compile(self.source, features=list(self.features), groups=self.groups, **kwargs)


@st.composite
def feature_sets(draw, features, min_size=1, max_size=3):
    chosen = draw(st.lists(st.sampled_from(features), min_size=min_size, max_size=max_size, unique=True))
    return "{" + ", ".join(_spell(f) for f in chosen) + "}"


def _spell(feature: str) -> str:
    return feature if feature.isidentifier() else f'"{feature}"'


@st.composite
def expressions(draw, features, groups, names, depth):
    """A kernel expression over ``features``, the group names and earlier definitions."""
    arg = st.one_of(feature_sets(features), st.sampled_from(sorted(groups))) if groups else feature_sets(features)
    leaves = [
        st.builds(lambda k, a: f"{k}({a})", st.sampled_from(KINDS), arg),
        st.builds(lambda a: f"additive({a})", arg),
        st.builds(lambda a: f"fj({a})", arg),
        feature_sets(features),
    ]
    if groups:
        leaves.append(st.sampled_from(sorted(groups)))
    identifiers = [f for f in features if f.isidentifier()]
    if identifiers:
        leaves.append(st.sampled_from(identifiers))
    if names:
        leaves.append(st.sampled_from(names))
    leaf = st.one_of(*leaves)
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(leaf)
    sub = expressions(features, groups, names, depth - 1)
    parts = draw(st.lists(sub, min_size=2, max_size=3))
    op = draw(st.sampled_from(["+", "*", "fixed"]))
    if op == "fixed":
        raw = draw(st.lists(st.integers(1, 9), min_size=len(parts), max_size=len(parts)))
        weights = [r / sum(raw) for r in raw]
        weights[-1] = 1.0 - sum(weights[:-1])
        return "(" + " + ".join(f"{w!r} * ({p})" for w, p in zip(weights, parts)) + ")"
    return "(" + f" {op} ".join(parts) + ")"


@st.composite
def programs(draw, max_features=5, max_depth=2, max_definitions=2):
    """A random valid program: features, Python groups, definitions (some shared) and a result."""
    n = draw(st.integers(2, max_features))
    features = [f"x{i}" for i in range(n)]
    if draw(st.booleans()):
        features[-1] = "1cycle-x.max"  # a name that must be quoted
    groups = {}
    for g in range(draw(st.integers(0, 2))):
        groups[f"g{g}"] = draw(st.lists(st.sampled_from(features), min_size=1, max_size=3, unique=True))
    lines, names = [], []
    for i in range(draw(st.integers(0, max_definitions))):
        lines.append(f"k{i} = " + draw(expressions(features, groups, names, max_depth)))
        names.append(f"k{i}")
    result = draw(expressions(features, groups, names, max_depth))
    # Every definition is used at least once in the result (unused ones only warn).
    if names:
        used = " * ".join(names)
        result = f"({result}) + {used}" if draw(st.booleans()) else f"({result}) * ({used})"
    if draw(st.booleans()):
        lines.append(f"kernel = {result}")
    else:
        lines.append(result)
    source = "# random program\n" + "\n".join(lines) + "\n"
    return Program(source, tuple(features), groups)
