"""What the generated fused backends (``triton``, ``cpu``) share: one walk over the IR, spelled per language.

Both emit straight-line code per pair of points from one plan (``FusedPlan``: reachable
nodes in evaluation order, the features and slots they read) and one walk over it
(``PairCode``: what is computed in which order, forward and backward). A backend only
spells it: its ``Dialect`` is a table of statement templates, as tinygrad's renderers keep
one ``code_for_op`` table per language over one shared walk. Every node is named in a
comment (``describe_node``), so that generated source reads against its kernel expression.

The chain rule through a distance (``ALGEBRA``): with ``d = x1_f - x2_f``, ``c = 1 / l^2``,
``il = 1 / l`` and ``h = dL/dv * g`` (``g``: the term's slope, see ``kinds.Distance``),
``r2 = sum_f c_f d_f^2`` gives ``dL/dx1_f = c_f h d_f`` and ``dL/dl_f = -h c_f d_f^2 / l_f``;
``s = sum_f il_f |d_f|`` gives ``dL/dx1_f = h il_f sign(d_f)`` (sign(0) = 0) and
``dL/dl_f = -h il_f^2 |d_f|``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..ir import KernelIR, Product, Sum, Term
from ..kinds import Distance, Math, kind_of


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
    """An indented list of source lines (four spaces per level), after ``text`` as it is."""

    def __init__(self, text: str = ""):
        self.lines: list[str] = text.splitlines()

    def __call__(self, text: str = "", indent: int = 1) -> None:
        self.lines.append(("    " * indent + text) if text else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


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
        self.slot_distance = {s: self.distance[t] for t in self.terms for s in ir.terms[t].lengthscales}
        self.slots = sorted(self.slot_distance)
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


# --- the shared walk and its per-language tables --------------------------------------------

@dataclass(frozen=True)
class DistanceAlgebra:
    """The names of the chain rule through one distance type (fields ``f`` feature, ``s`` slot, ``t`` term)."""

    power: str  # per feature: the power of the difference d{f} that the distance sums
    inverse: str  # per slot: the factor of the power in the distance
    accumulator: str  # per slot: the sum of h{t} * power over pairs, where the dialect accumulates
    lengthscale_factor: str  # per slot: that sum times this is dL/dl
    x_factor: str  # per (term, feature): its summand of the factor of x_factor_of in dL/dx1
    x_factor_of: str  # per feature: what the summed x_factor terms multiply in dL/dx1


ALGEBRA = {
    Distance.SQUARED: DistanceAlgebra("sq{f}", "c{s}", "gq{s}", "(-c{s} / l{s})", "c{s} * h{t}", "d{f}"),
    Distance.ABSOLUTE: DistanceAlgebra("ad{f}", "il{s}", "ga{s}", "(-il{s} * il{s})", "h{t} * il{s}", "sg{f}"),
}


@dataclass(frozen=True)
class Dialect:
    """How one language spells the statements of the shared walk (``PairCode``): one table per backend.

    Statement templates take ``{}`` fields (name, then expression); expression templates the
    ``ALGEBRA`` fields ``f`` and ``s`` (and ``P``, ``W``: lengthscales and weights per batch element).
    """

    comment: str
    define: str  # a value set once
    declare: str  # the first value of a variable added to later (an adjoint)
    increment: str
    literal: Callable[[float], str]  # a float constant
    zero: str  # a parameter gradient no pair contributes to
    power: Mapping[Distance, str]  # ALGEBRA[distance].power from d{f}
    inverse: Mapping[Distance, str]  # ALGEBRA[distance].inverse from l{s}
    sign: str  # sg{f}: the sign of d{f} (0 at 0), read by the backward of absolute distances
    value: Callable[[Math], Callable[[int, str], tuple[str, ...]]]  # a kind's lines setting v{k}
    slope: Callable[[Math], Callable[[int, str], tuple[str, ...]]]  # ... and then g{k}
    lengthscale: str  # lengthscale {s} of batch element b
    weight: str  # softmaxed weight {s} of batch element b
    scale: str  # the variable holding the output scale of batch element b
    scale_load: str
    scale_gradient: str  # the variable holding the partial dL/d(outputscale)
    reduce: str | None  # a parameter gradient's pair summands reduced after the pairs; None: summed in the loop
    lengthscale_row: str = ""  # a statement before the lengthscale loads (a row pointer)
    weight_row: str = ""  # a statement before the weight loads


@dataclass(frozen=True)
class Summand:
    """One pair's summand of a parameter gradient: ``expression`` (summed over pairs) times ``factor``."""

    accumulator: str
    expression: str
    factor: str = ""


@dataclass
class PairGradients:
    """What the reverse sweep of one pair leaves for its kernel to store."""

    parameters: dict[str, list[Summand]] = field(default_factory=dict)  # by slot key (l3, w1), in sweep order
    accumulators: list[str] = field(default_factory=list)  # summed over the pair loop (a dialect without reduce)
    x_factors: dict[tuple[Distance, int], list[str]] = field(default_factory=dict)  # ALGEBRA x_factor summands


class PairCode:
    """The language-neutral walk over one IR for a pair of points, spelled in a ``Dialect``.

    Decides what is computed in which order, forward (the powers of the differences, every
    node's value in evaluation order) and backward (the adjoints ``a<id> = dL/d(value of node
    id)`` from the root down, then each term's chain rule through its distance); the backends
    place these statements in their kernels and store what the sweep leaves (``PairGradients``).
    """

    ADJOINTS = "adjoints a<id> = dL/d(value of node id), from the root down"  # the sweep's opening comment

    def __init__(self, plan: FusedPlan, dialect: Dialect):
        self.plan, self.ir, self.dialect = plan, plan.ir, dialect

    def comment(self, text: str) -> str:
        return self.dialect.comment.format(text)

    def define(self, name: str, expression: str, note: str = "") -> str:
        """``name = expression``, with a trailing comment ``note`` if given."""
        line = self.dialect.define.format(name, expression)
        return f"{line}  {self.comment(note)}" if note else line

    # --- forward ----------------------------------------------------------------------
    def parameters(self, out: Lines, indent: int) -> None:
        """The hyperparameters of batch element ``b``: lengthscales (and their inverses), weights, scale."""
        plan, ir, d = self.plan, self.ir, self.dialect
        if plan.slots:
            out(self.comment("lengthscales of this batch element (c = 1 / l^2, il = 1 / l)"), indent)
            if d.lengthscale_row:
                out(d.lengthscale_row, indent)
        for s in plan.slots:
            out(self.define(f"l{s}", d.lengthscale.format(s=s, P=ir.num_lengthscales), ir.lengthscale_names[s]),
                indent)
            out(self.define(ALGEBRA[plan.slot_distance[s]].inverse.format(s=s),
                            d.inverse[plan.slot_distance[s]].format(s=s)), indent)
        if plan.weight_slots:
            out(self.comment("softmaxed sum weights"), indent)
            if d.weight_row:
                out(d.weight_row, indent)
        for s in plan.weight_slots:
            out(self.define(f"w{s}", d.weight.format(s=s, W=ir.num_weights), ir.weight_names[s]), indent)
        out(self.define(d.scale, d.scale_load), indent)

    def powers(self, out: Lines, feature: int, indent: int, backward: bool) -> None:
        """The powers of ``d{feature}`` its distances sum (and its sign, for absolute distances' backward)."""
        used = [distance for distance in ALGEBRA if feature in self.plan.distance_features[distance]]
        for distance in used:
            out(self.define(ALGEBRA[distance].power.format(f=feature),
                            self.dialect.power[distance].format(f=feature)), indent)
        if backward and Distance.ABSOLUTE in used:
            out(self.define(ALGEBRA[Distance.ABSOLUTE].x_factor_of.format(f=feature),
                            self.dialect.sign.format(f=feature)), indent)

    def values(self, out: Lines, indent: int, backward: bool) -> None:
        """Every reachable node's value ``v<id>`` (and each term's slope ``g<id>`` for backward)."""
        ir, d = self.ir, self.dialect
        for k in self.plan.order:
            node = ir.node(k)
            out(self.comment(describe_node(ir, k)), indent)
            if isinstance(node, Term):
                kind = kind_of(node.kind, node.label)
                algebra, distance = ALGEBRA[kind.distance], f"{kind.distance.variable}{k}"
                out(self.define(distance, " + ".join(f"{algebra.power} * {algebra.inverse}".format(f=f, s=s)
                                                     for f, s in zip(node.features, node.lengthscales))), indent)
                for line in d.value(kind.math)(k, distance) + (d.slope(kind.math)(k, distance) if backward else ()):
                    out(line, indent)
            elif isinstance(node, Product):
                out(self.define(f"v{k}", " * ".join(f"v{c}" for c in node.children)), indent)
            else:
                weights = ([d.literal(w) for w in node.fixed] if node.fixed is not None
                           else [f"w{s}" for s in node.weights])
                out(self.define(f"v{k}", " + ".join(f"{w} * v{c}" for w, c in zip(weights, node.children))),
                    indent)

    # --- backward ---------------------------------------------------------------------
    def scale_partial(self, out: Lines, indent: int, grads: PairGradients) -> None:
        """The pair's summand of dL/d(outputscale), ``gk * v(root)`` with ``gk = dL/dK``."""
        d, expression = self.dialect, f"gk * v{self.ir.root}"
        if d.reduce is None:
            self._partial(out, indent, grads, "scale", Summand(d.scale_gradient, expression))
        else:
            out(self.define(d.scale_gradient, d.reduce.format(expression)), indent)

    def adjoints(self, out: Lines, indent: int, grads: PairGradients) -> None:
        """The reverse sweep from ``gk = dL/dK``: the adjoints, then each term's ``h{t} = dL/dv * g``.

        Collects the summands of the weight and lengthscale gradients and of dL/dx1 in ``grads``.
        """
        ir, plan, d = self.ir, self.plan, self.dialect
        defined: set[int] = set()

        def add(node_id: int, expression: str) -> None:
            out((d.increment if node_id in defined else d.declare).format(f"a{node_id}", expression), indent)
            defined.add(node_id)

        add(ir.root, f"{d.scale} * gk")
        for k in reversed(plan.composites):
            node = ir.node(k)
            out(self.comment(describe_node(ir, k)), indent)
            if isinstance(node, Sum) and node.fixed is not None:
                for w, c in zip(node.fixed, node.children):
                    add(c, f"{d.literal(w)} * a{k}")
            elif isinstance(node, Sum):
                for s, c in zip(node.weights, node.children):
                    self._partial(out, indent, grads, f"w{s}", Summand(f"gw{s}", f"a{k} * v{c}"))
                    add(c, f"w{s} * a{k}")
            else:
                for i, c in enumerate(node.children):
                    add(c, " * ".join([f"a{k}", *(f"v{o}" for j, o in enumerate(node.children) if j != i)]))
        for t in plan.terms:
            term, algebra = ir.terms[t], ALGEBRA[plan.distance[t]]
            out(self.comment(describe_node(ir, t)), indent)
            out(self.define(f"h{t}", f"a{t} * g{t}"), indent)
            for f, s in zip(term.features, term.lengthscales):
                self._partial(out, indent, grads, f"l{s}", Summand(
                    algebra.accumulator.format(s=s), f"h{t} * {algebra.power.format(f=f)}",
                    algebra.lengthscale_factor.format(s=s)))
                grads.x_factors.setdefault((plan.distance[t], f), []).append(algebra.x_factor.format(t=t, f=f, s=s))

    def _partial(self, out: Lines, indent: int, grads: PairGradients, key: str, summand: Summand) -> None:
        grads.parameters.setdefault(key, []).append(summand)
        if self.dialect.reduce is None:
            out(self.dialect.increment.format(summand.accumulator, summand.expression), indent)
            if summand.accumulator not in grads.accumulators:
                grads.accumulators.append(summand.accumulator)

    def x_gradient(self, feature: int, grads: PairGradients) -> str:
        """The expression of the pair's dL/dx1 of ``feature`` (dL/dx2 is its negative)."""
        return " + ".join(f"({' + '.join(grads.x_factors[distance, feature])}) * "
                          f"{algebra.x_factor_of.format(f=feature)}"
                          for distance, algebra in ALGEBRA.items() if (distance, feature) in grads.x_factors)

    def parameter_gradient(self, slot: int, grads: PairGradients) -> str:
        """The expression of this program's partial dL/d(parameter slot), after the pairs."""
        d = self.dialect
        key, _ = self.plan.slot_label(slot)
        if key == "scale":
            return d.scale_gradient
        summands = grads.parameters.get(key, [])
        if d.reduce is None:  # one accumulator per slot and distance, summed in the loop
            parts = list(dict.fromkeys((s.accumulator, s.factor) for s in summands))
        else:
            parts = [(d.reduce.format(s.expression), s.factor) for s in summands]
        return " + ".join(total + (f" * {factor}" if factor else "") for total, factor in parts) or d.zero


SLOTS_NOTE = "Parameter-gradient slots: lengthscales 0..P-1, weights P..P+W-1, outputscale P+W."


class Generator:
    """Base of a backend's generator: the plan of one IR and the shared walk in the backend's ``dialect``."""

    dialect: Dialect
    version: str  # bumped whenever the generated code changes meaning (part of the cache key)

    def __init__(self, ir: KernelIR):
        self.ir, self.plan = ir, FusedPlan(ir)
        self.code = PairCode(self.plan, self.dialect)
        self.num_slots = ir.num_lengthscales + ir.num_weights + 1
        self.F = len(self.plan.features)

    def summary(self) -> tuple[str, str]:
        """The module header's lines on the IR: fingerprint, terms and features; parameter counts."""
        ir, plan = self.ir, self.plan
        kinds = ", ".join(sorted({ir.terms[t].kind for t in plan.terms}))
        return (f"IR fingerprint {ir.fingerprint()} (codegen v{self.version}): {count(len(plan.terms), 'term')} "
                f"({kinds}) over {len(plan.features)} of {len(ir.features)} features,",
                f"{count(ir.num_lengthscales, 'lengthscale')}, {count(ir.num_weights, 'sum weight')}.")

    def generated(self, source: str) -> GeneratedSource:
        ir = self.ir
        return GeneratedSource(source=source, used_features=tuple(self.plan.features),
                               num_lengthscales=ir.num_lengthscales, num_weights=ir.num_weights)
