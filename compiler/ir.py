"""The one intermediate form every backend consumes.

A kernel is a table of base terms (each a stationary kernel over a few input
columns with one lengthscale slot per column) and a DAG of weighted sums and
products over them, flattened into levels. Node ids: ``0 .. T-1`` are the terms
(node id == term index), ``T .. N-1`` the composite nodes in ``nodes`` order,
which is topological. A name shared in the source is one node with several
parents. The whole kernel is ``outputscale * value(root)``.

Parameters live in flat vectors so that refitting never changes the structure:
``lengthscale[..., P]`` (positive) and ``weight_logits[..., W]`` (one softmax
group per learned sum). Every slot carries a readable name that is identical on
every backend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Span:
    """Where a construct came from in the user's source (1-based, end exclusive)."""

    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Term:
    """One base kernel: ``kind`` (a name in ``kinds.KINDS``) over input columns ``features``.

    ``lengthscales[i]`` is the slot in the lengthscale vector for ``features[i]``.
    """

    kind: str
    features: tuple[int, ...]
    lengthscales: tuple[int, ...]
    label: str
    span: Span


@dataclass(frozen=True)
class Sum:
    """Convex combination of ``children`` (node ids).

    Learned: ``weights`` are slots in ``weight_logits`` and the weights are their
    softmax. Fixed (numeric literals in the source): ``fixed`` holds the weights
    and ``weights`` is empty.
    """

    children: tuple[int, ...]
    weights: tuple[int, ...]
    fixed: tuple[float, ...] | None
    label: str
    span: Span


@dataclass(frozen=True)
class Product:
    """Elementwise product of ``children`` (node ids)."""

    children: tuple[int, ...]
    label: str
    span: Span


@dataclass(frozen=True)
class KernelIR:
    """A lowered kernel: terms, composite nodes, levels and parameter layout."""

    features: tuple[str, ...]
    """Input column names, in the order of the input's last dimension."""
    terms: tuple[Term, ...]
    nodes: tuple[Sum | Product, ...]
    """Composite nodes; node id ``len(terms) + i`` is ``nodes[i]``."""
    levels: tuple[tuple[int, ...], ...]
    """Composite node ids grouped so that each level only reads terms and earlier levels."""
    root: int
    lengthscale_names: tuple[str, ...]
    """One readable name per lengthscale slot (``P`` of them)."""
    weight_names: tuple[str, ...]
    """One readable name per weight-logit slot (``W`` of them); names the softmaxed weight."""
    definitions: tuple[tuple[str, int], ...] = ()
    """Named kernel definitions of the source (name, node id), in source order."""
    source: str = field(default="", compare=False)
    root_span: Span | None = field(default=None, compare=False)

    @property
    def num_terms(self) -> int:
        return len(self.terms)

    @property
    def num_nodes(self) -> int:
        return len(self.terms) + len(self.nodes)

    @property
    def num_lengthscales(self) -> int:
        return len(self.lengthscale_names)

    @property
    def num_weights(self) -> int:
        return len(self.weight_names)

    def node(self, node_id: int) -> Term | Sum | Product:
        """The term or composite node with this id."""
        if node_id < len(self.terms):
            return self.terms[node_id]
        return self.nodes[node_id - len(self.terms)]

    def weight_groups(self) -> tuple[tuple[int, ...], ...]:
        """The softmax groups of ``weight_logits``: one per learned sum, in node order."""
        return tuple(n.weights for n in self.nodes if isinstance(n, Sum) and n.weights)

    def structure_key(self) -> tuple:
        """Everything that determines the computation (not labels, spans or values)."""
        terms = tuple((t.kind, t.features, t.lengthscales) for t in self.terms)
        nodes = tuple(
            ("sum", n.children, n.weights, n.fixed) if isinstance(n, Sum) else ("prod", n.children)
            for n in self.nodes
        )
        return (len(self.features), terms, nodes, self.levels, self.root,
                self.num_lengthscales, self.num_weights)

    def fingerprint(self) -> str:
        """Stable hash of ``structure_key``: the cache key for generated code."""
        return hashlib.sha256(repr(self.structure_key()).encode()).hexdigest()[:16]
