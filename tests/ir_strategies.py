"""Hypothesis strategies that build random valid ``KernelIR`` objects directly (no front end).

Random terms of every kind of the registry (``kinds.KINDS``) over random feature subsets, a random DAG of sums and
products in which nodes may have several parents, learned and fixed-weight sums,
and lengthscale / weight slots in a shuffled order so that backends cannot rely on
slots following the terms.
"""

from __future__ import annotations

from hypothesis import strategies as st

from kerneldsl.compiler.ir import KernelIR, Product, Span, Sum, Term
from kerneldsl.compiler.kinds import KIND_NAMES

SPAN = Span(1, 1, 1, 2)


def levels_of(num_terms: int, nodes: list[Sum | Product]) -> tuple[tuple[int, ...], ...]:
    """Composite node ids grouped by depth: a node's level is one more than its deepest child's."""
    depth = {t: 0 for t in range(num_terms)}
    for i, node in enumerate(nodes):
        depth[num_terms + i] = 1 + max(depth[c] for c in node.children)
    top = max(depth.values(), default=0)
    return tuple(tuple(n for n in range(num_terms, num_terms + len(nodes)) if depth[n] == level)
                 for level in range(1, top + 1))


@st.composite
def kernel_irs(draw, max_features: int = 4, max_terms: int = 5, max_composites: int = 4,
               max_term_features: int = 3, kinds: tuple[str, ...] = KIND_NAMES) -> KernelIR:
    """A random valid ``KernelIR``; every node is reachable from the root."""
    num_features = draw(st.integers(1, max_features))
    features = tuple(f"x{i}" for i in range(num_features))
    num_terms = draw(st.integers(1, max_terms))

    term_specs = []
    for t in range(num_terms):
        kind = draw(st.sampled_from(kinds))
        subset = draw(st.sets(st.integers(0, num_features - 1), min_size=1,
                              max_size=min(num_features, max_term_features)))
        term_specs.append((kind, tuple(draw(st.permutations(sorted(subset))))))
    num_slots = sum(len(f) for _, f in term_specs)
    slot_order = draw(st.permutations(range(num_slots)))

    terms, ls_names, k = [], [""] * num_slots, 0
    for t, (kind, feats) in enumerate(term_specs):
        slots = tuple(slot_order[k:k + len(feats)])
        k += len(feats)
        label = f"t{t}"
        for f, s in zip(feats, slots):
            ls_names[s] = f"{label}.{kind}.{features[f]}"
        terms.append(Term(kind, feats, slots, label, SPAN))

    nodes: list[Sum | Product] = []
    weight_specs: list[str] = []  # names in creation order; shuffled into slots below
    parents = [0] * num_terms

    def add_node(children: tuple[int, ...]) -> None:
        label = f"n{len(nodes)}"
        for c in children:
            parents[c] += 1
        parents.append(0)
        if draw(st.booleans()):
            nodes.append(Product(children, label, SPAN))
        elif draw(st.integers(0, 3)) == 0:
            fixed = tuple(draw(st.floats(0.1, 2.0)) for _ in children)
            nodes.append(Sum(children, (), fixed, label, SPAN))
        else:
            first = len(weight_specs)
            weight_specs.extend(f"{label}.w{i}" for i in range(len(children)))
            nodes.append(Sum(children, tuple(range(first, first + len(children))), None, label, SPAN))

    for _ in range(draw(st.integers(0, max_composites))):
        existing = num_terms + len(nodes)
        children = draw(st.lists(st.integers(0, existing - 1), min_size=2, max_size=3))
        add_node(tuple(children))
    orphans = tuple(n for n, count in enumerate(parents) if count == 0)
    if len(orphans) > 1:
        add_node(orphans)
    root = num_terms + len(nodes) - 1 if nodes else 0

    w_order = draw(st.permutations(range(len(weight_specs))))
    remap = dict(enumerate(w_order))
    weight_names = [""] * len(weight_specs)
    for creation, slot in remap.items():
        weight_names[slot] = weight_specs[creation]
    nodes = [Sum(n.children, tuple(remap[w] for w in n.weights), n.fixed, n.label, n.span)
             if isinstance(n, Sum) else n for n in nodes]

    definitions = tuple((n.label, num_terms + i) for i, n in enumerate(nodes))
    return KernelIR(features=features, terms=tuple(terms), nodes=tuple(nodes),
                    levels=levels_of(num_terms, nodes), root=root,
                    lengthscale_names=tuple(ls_names), weight_names=tuple(weight_names),
                    definitions=definitions)
