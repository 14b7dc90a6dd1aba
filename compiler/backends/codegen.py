"""What the generated fused backends (``triton``, ``cpu``) share: the plan of one IR and readable source.

Both emit straight-line code per pair of points from the same plan (reachable
nodes in evaluation order, the features and slots they read) and name every
node in a comment (``describe_node``), so that generated source can be read
against the kernel expression it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import KernelIR, Sum, Term
from ..kinds import Distance, kind_of


@dataclass(frozen=True)
class GeneratedSource:
    """The generated module and the layout of the buffers its kernels write.

    ``used_features`` are the input columns the kernel reads; the x-gradient
    buffers hold them compactly in this order. ``num_grad_slots`` is the last
    dimension of the parameter-gradient buffer: ``P`` lengthscales, ``W`` weights,
    then the output scale.
    """

    source: str
    used_features: tuple[int, ...]
    num_lengthscales: int
    num_weights: int

    @property
    def num_grad_slots(self) -> int:
        return self.num_lengthscales + self.num_weights + 1


class Lines:
    """An indented list of source lines (four spaces per level)."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "", indent: int = 1) -> None:
        self.lines.append(("    " * indent + text) if text else "")


class FusedPlan:
    """What one IR needs: reachable nodes in evaluation order and their inputs."""

    def __init__(self, ir: KernelIR):
        self.ir = ir
        self.order = self._post_order()
        self.terms = [t for t in self.order if t < ir.num_terms]
        self.composites = [k for k in self.order if k >= ir.num_terms]
        self.features = sorted({f for t in self.terms for f in ir.terms[t].features})
        self.compact = {f: i for i, f in enumerate(self.features)}
        self.distance = {t: kind_of(ir.terms[t].kind, ir.terms[t].label).distance for t in self.terms}
        self.distance_features = {d: {f for t in self.terms if self.distance[t] is d for f in ir.terms[t].features}
                                  for d in Distance}
        self.distance_slots = {d: {s for t in self.terms if self.distance[t] is d for s in ir.terms[t].lengthscales}
                               for d in Distance}
        self.slots = sorted({s for t in self.terms for s in ir.terms[t].lengthscales})
        self.weight_slots = sorted({s for k in self.composites
                                    for s in getattr(ir.node(k), "weights", ())})

    def _post_order(self) -> list[int]:
        """Node ids reachable from the root, each after its children (DFS post-order)."""
        ir, seen, order = self.ir, set(), []
        stack = [(ir.root, False)]
        while stack:
            node_id, expanded = stack.pop()
            if expanded:
                order.append(node_id)
                continue
            if node_id in seen:
                continue
            seen.add(node_id)
            stack.append((node_id, True))
            node = ir.node(node_id)
            if not isinstance(node, Term):
                for child in reversed(node.children):
                    if child not in seen:
                        stack.append((child, False))
        return order

    def slot_label(self, slot: int) -> tuple[str, str]:
        """(variable key, readable name) of a parameter-gradient slot: ``l3``/``w1``/``scale``."""
        ir = self.ir
        if slot < ir.num_lengthscales:
            return f"l{slot}", ir.lengthscale_names[slot]
        if slot < ir.num_lengthscales + ir.num_weights:
            return f"w{slot - ir.num_lengthscales}", ir.weight_names[slot - ir.num_lengthscales]
        return "scale", "outputscale"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def literal(value: float) -> str:
    """A float constant as source text (exact: ``repr``)."""
    return repr(float(value))


def describe_node(ir: KernelIR, node_id: int) -> str:
    """One-line comment text naming a node: ``term 3: matern52(a, b)`` or ``sum 7: label``."""
    node = ir.node(node_id)
    if isinstance(node, Term):
        names = ", ".join(ir.features[f] for f in node.features)
        text = f"term {node_id}: {node.kind}({names})"
        return text if not node.label or node.label == f"{node.kind}({names})" else f"{text}  [{node.label}]"
    kind = "sum" if isinstance(node, Sum) else "product"
    return f"{kind} {node_id}: {node.label}" if node.label else f"{kind} {node_id}"
