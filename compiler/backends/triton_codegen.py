"""Generate the source of fused ``@triton.jit`` kernels specialised to one KernelIR.

Each kernel is straight-line code over one tile of the covariance matrix: the
features read, the terms, and the sum/product tree are compile-time constants;
lengthscales, weights and the output scale are loaded from parameter tensors
(one row per batch element), so refitting never recompiles. Four kernels per IR:

- ``kd_forward``: one ``BLOCK_M x BLOCK_N`` tile of K per program;
- ``kd_forward_diag``: ``BLOCK_M`` entries of diag K per program;
- ``kd_backward``: given dL/dK, recomputes the tile in registers and writes this
  program's partial sums of dL/d(lengthscales, weights, outputscale) and of
  dL/dx1, dL/dx2 (reduced afterwards by one torch sum: deterministic, no atomics);
- ``kd_backward_diag``: the same for the diag path.

Each term's value ``v`` and slope ``g`` come from its kind's entry in ``kinds.KINDS``
as a function of one distance variable; the chain rule through the distance is the
distance type's (``_DISTANCE_CODE``, math in ``kinds.Distance``). With
``d = x1_f - x2_f``, ``c = 1 / l^2``, ``il = 1 / l``: a squared distance ``r2 = sum_f c_f d_f^2``
gives ``dv/dx1_f = g c_f d_f`` and ``dv/dl_f = -g c_f d_f^2 / l_f``; an absolute one
``s = sum_f il_f |d_f|`` gives ``dv/dx1_f = g il_f sign(d_f)`` (sign(0) = 0) and
``dv/dl_f = -g il_f^2 |d_f|``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import KernelIR, Product, Sum, Term
from ..kinds import Distance, kind_of

CODEGEN_VERSION = "1"
"""Bumped whenever the generated code changes meaning (part of the cache key)."""


@dataclass(frozen=True)
class _DistanceCode:
    """Source templates of one distance type; fields ``f`` (feature), ``s`` (slot), ``t`` (term)."""

    power: str
    """Per feature: the power of the difference ``d{f}`` that the distance sums."""
    inverse: str
    """Per lengthscale slot: the factor of the power in the distance."""
    term: str
    """One (feature, slot) summand of the distance."""
    lengthscale_gradient: str
    """One (term, feature) contribution to dL/dl, from ``h{t} = dL/dv * g``."""
    x_factor: str
    """Per (term, feature): its summand of the factor of ``x_factor_of`` in dL/dx1."""
    x_factor_of: str
    """Per feature: what the summed ``x_factor`` terms multiply in dL/dx1."""
    backward: tuple[str, ...] = ()
    """Extra per-feature lines of the backward kernels."""


_DISTANCE_CODE = {
    Distance.SQUARED: _DistanceCode(
        power="sq{f} = d{f} * d{f}", inverse="c{s} = 1.0 / (l{s} * l{s})", term="sq{f} * c{s}",
        lengthscale_gradient="tl.reduce(h{t} * sq{f}, None, _add) * (-c{s} / l{s})",
        x_factor="c{s} * h{t}", x_factor_of="d{f}"),
    Distance.ABSOLUTE: _DistanceCode(
        power="ad{f} = tl.abs(d{f})", inverse="il{s} = 1.0 / l{s}", term="ad{f} * il{s}",
        lengthscale_gradient="tl.reduce(h{t} * ad{f}, None, _add) * (-il{s} * il{s})",
        x_factor="h{t} * il{s}", x_factor_of="sg{f}",
        backward=("sg{f} = (d{f} > 0).to(d{f}.dtype) - (d{f} < 0).to(d{f}.dtype)",)),
}


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


class _Lines:
    """An indented list of source lines."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "", indent: int = 1) -> None:
        self.lines.append(("    " * indent + text) if text else "")


class _Plan:
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _float(value: float) -> str:
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


class _Generator:
    """Emits the four kernels of one IR."""

    def __init__(self, ir: KernelIR):
        self.ir = ir
        self.plan = _Plan(ir)
        self.num_slots = ir.num_lengthscales + ir.num_weights + 1

    # --- module -----------------------------------------------------------------
    def module(self) -> GeneratedSource:
        ir, plan = self.ir, self.plan
        kinds = sorted({ir.terms[t].kind for t in plan.terms})
        head = [
            '"""Fused covariance kernels generated by kerneldsl (triton backend). Do not edit.',
            "",
            f"IR fingerprint {ir.fingerprint()} (codegen v{CODEGEN_VERSION}): {_count(len(plan.terms), 'term')} "
            f"({', '.join(kinds)}) over {len(plan.features)} of {len(ir.features)} features,",
            f"{_count(ir.num_lengthscales, 'lengthscale')}, {_count(ir.num_weights, 'sum weight')}.",
            "Parameter-gradient slots: lengthscales 0..P-1, weights P..P+W-1, outputscale P+W.",
            '"""',
            "",
            "import triton",
            "import triton.language as tl",
            "",
            "# The combine function behind tl.sum. Reducing with it directly (not through the @jit",
            "# tl.sum) works in compiled and interpreted kernels whatever the mode triton was imported in.",
            "try:",
            "    _add = tl.standard._sum_combine",
            "except AttributeError:",
            "    @triton.jit",
            "    def _add(a, b):",
            "        return a + b",
            "",
            "",
        ]
        body = [self._forward(diag=False), self._forward(diag=True),
                self._backward(diag=False), self._backward(diag=True)]
        source = "\n".join(head) + "\n" + "\n\n".join(body)
        return GeneratedSource(source=source, used_features=tuple(plan.features),
                               num_lengthscales=ir.num_lengthscales, num_weights=ir.num_weights)

    # --- pieces shared by the kernels ------------------------------------------------
    def _signature(self, out: _Lines, name: str, diag: bool, backward: bool) -> None:
        out("@triton.jit", 0)
        out(f"def {name}(", 0)
        if diag:
            out("x1_ptr, x2_ptr, ls_ptr, w_ptr, scale_ptr, n,")
        else:
            out("x1_ptr, x2_ptr, ls_ptr, w_ptr, scale_ptr, tiles_ptr, n, m,")
        out("x1_sb, x1_sn, x1_sd, x2_sb, x2_sn, x2_sd, ls_sb, ls_sp, w_sb, w_sp, scale_sb,")
        if not backward:
            out("out_ptr, out_sb, out_sn, out_sm," if not diag else "out_ptr, out_sb, out_sn,")
        elif diag:
            out("gout_ptr, gout_sb, gout_sn, gparam_ptr, gx1_ptr, gx2_ptr,")
        else:
            out("gout_ptr, gout_sb, gout_sn, gout_sm, gparam_ptr, gx1_ptr, gx1_sb, gx1_ss, gx1_sn,")
            out("gx2_ptr, gx2_sb, gx2_ss, gx2_sn,")
        out("BLOCK_M: tl.constexpr," if diag else "BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,")
        if not diag:
            out("SYMMETRIC: tl.constexpr," if not backward else "SYMMETRIC: tl.constexpr, WITH_X_GRAD: tl.constexpr,")
        elif backward:
            out("WITH_X_GRAD: tl.constexpr,")
        out("):", 0)

    def _indices(self, out: _Lines, diag: bool) -> None:
        if diag:
            out("bm = tl.program_id(0).to(tl.int64)")
            out("b = tl.program_id(1).to(tl.int64)")
            out("rows = bm * BLOCK_M + tl.arange(0, BLOCK_M)")
            out("rmask = rows < n")
            return
        out("# this program's tile (row block bm, column block bn) of batch element b")
        out("t = tl.program_id(0)")
        out("b = tl.program_id(1).to(tl.int64)")
        out("bm = tl.load(tiles_ptr + 2 * t)")
        out("bn = tl.load(tiles_ptr + 2 * t + 1)")
        out("rows = bm * BLOCK_M + tl.arange(0, BLOCK_M)")
        out("cols = bn * BLOCK_N + tl.arange(0, BLOCK_N)")
        out("rmask = rows < n")
        out("cmask = cols < m")

    def _parameters(self, out: _Lines) -> None:
        plan = self.plan
        names = self.ir.lengthscale_names
        if plan.slots:
            out("# lengthscales of this batch element (c = 1 / l^2, il = 1 / l)")
            out("ls_row = ls_ptr + b * ls_sb")
        for s in plan.slots:
            out(f"l{s} = tl.load(ls_row + {s} * ls_sp)  # {names[s]}")
            for distance, code in _DISTANCE_CODE.items():
                if s in plan.distance_slots[distance]:
                    out(code.inverse.format(s=s))
        if plan.weight_slots:
            out("# softmaxed sum weights")
            out("w_row = w_ptr + b * w_sb")
        for s in plan.weight_slots:
            out(f"w{s} = tl.load(w_row + {s} * w_sp)  # {self.ir.weight_names[s]}")
        out("scale = tl.load(scale_ptr + b * scale_sb)")

    def _differences(self, out: _Lines, diag: bool, backward: bool) -> None:
        plan, ir = self.plan, self.ir
        out("# input rows of this program; feature f is column f")
        out("x1_rows = x1_ptr + b * x1_sb + rows * x1_sn")
        out(f"x2_rows = x2_ptr + b * x2_sb + {'rows' if diag else 'cols'} * x2_sn")
        x2_mask = "rmask" if diag else "cmask"
        for f in plan.features:
            out(f"# feature {f}: {ir.features[f]}")
            out(f"x1_{f} = tl.load(x1_rows + {f} * x1_sd, mask=rmask, other=0.0)")
            out(f"x2_{f} = tl.load(x2_rows + {f} * x2_sd, mask={x2_mask}, other=0.0)")
            out(f"d{f} = x1_{f} - x2_{f}" if diag else f"d{f} = x1_{f}[:, None] - x2_{f}[None, :]")
            used = [code for distance, code in _DISTANCE_CODE.items() if f in plan.distance_features[distance]]
            for code in used:
                out(code.power.format(f=f))
            for line in (line for code in used for line in code.backward) if backward else ():
                out(line.format(f=f))

    def _values(self, out: _Lines, backward: bool) -> None:
        """Every reachable node's value ``v<id>`` (and each term's slope ``g<id>`` for backward)."""
        ir = self.ir
        for k in self.plan.order:
            node = ir.node(k)
            out(f"# {describe_node(ir, k)}")
            if isinstance(node, Term):
                self._term_value(out, k, node, backward)
            elif isinstance(node, Product):
                out(f"v{k} = " + " * ".join(f"v{c}" for c in node.children))
            else:
                weights = ([_float(w) for w in node.fixed] if node.fixed is not None
                           else [f"w{s}" for s in node.weights])
                out(f"v{k} = " + " + ".join(f"{w} * v{c}" for w, c in zip(weights, node.children)))

    def _term_value(self, out: _Lines, k: int, term: Term, backward: bool) -> None:
        kind = kind_of(term.kind, term.label)
        code = _DISTANCE_CODE[kind.distance]
        distance = f"{kind.distance.variable}{k}"
        out(f"{distance} = " + " + ".join(code.term.format(f=f, s=s) for f, s in zip(term.features, term.lengthscales)))
        for line in kind.math.triton_value(k, distance) + (kind.math.triton_slope(k, distance) if backward else ()):
            out(line)

    # --- forward -------------------------------------------------------------------
    def _forward(self, diag: bool) -> str:
        out = _Lines()
        name = "kd_forward_diag" if diag else "kd_forward"
        self._signature(out, name, diag, backward=False)
        doc = ("diag K for rows [bm * BLOCK_M, ...) of batch element b." if diag else
               "One tile of K = outputscale * k(x1, x2); SYMMETRIC: x1 is x2, "
               "upper tiles only, mirrored.")
        out(f'"""{doc}"""')
        self._indices(out, diag)
        self._parameters(out)
        self._differences(out, diag, backward=False)
        self._values(out, backward=False)
        out(f"k = scale * v{self.ir.root}")
        if diag:
            out("tl.store(out_ptr + b * out_sb + rows * out_sn, k, mask=rmask)")
        else:
            out("tl.store(out_ptr + b * out_sb + rows[:, None] * out_sn + cols[None, :] * out_sm, k,")
            out("         mask=rmask[:, None] & cmask[None, :])")
            out("if SYMMETRIC:")
            out("# the mirrored tile: entries strictly below the diagonal of K", 2)
            out("tl.store(out_ptr + b * out_sb + cols[:, None] * out_sn + rows[None, :] * out_sm, tl.trans(k),", 2)
            out("         mask=cmask[:, None] & rmask[None, :] & (cols[:, None] > rows[None, :]))", 2)
        return "\n".join(out.lines) + "\n"

    # --- backward ------------------------------------------------------------------
    def _backward(self, diag: bool) -> str:
        ir, plan = self.ir, self.plan
        out = _Lines()
        name = "kd_backward_diag" if diag else "kd_backward"
        self._signature(out, name, diag, backward=True)
        doc = ("Partial gradients of the diag path for rows [bm * BLOCK_M, ...) of batch element b."
               if diag else
               "Recompute one tile of K, then write this program's partial gradients.")
        out(f'"""{doc}"""')
        self._indices(out, diag)
        self._parameters(out)
        self._differences(out, diag, backward=True)
        self._values(out, backward=True)
        out("# dL/dK for this tile")
        if diag:
            out("gk = tl.load(gout_ptr + b * gout_sb + rows * gout_sn, mask=rmask, other=0.0)")
        else:
            out("gk = tl.load(gout_ptr + b * gout_sb + rows[:, None] * gout_sn + cols[None, :] * gout_sm,")
            out("             mask=rmask[:, None] & cmask[None, :], other=0.0)")
            out("if SYMMETRIC:")
            out("# fold in dL/dK of the mirrored tile (a diagonal tile is its own mirror)", 2)
            out("gt = tl.load(gout_ptr + b * gout_sb + cols[:, None] * gout_sn + rows[None, :] * gout_sm,", 2)
            out("             mask=cmask[:, None] & rmask[None, :], other=0.0)", 2)
            out("gk = tl.where(bm != bn, gk + tl.trans(gt), gk)", 2)
        out("# adjoints a<id> = dL/d(value of node id), from the root down")
        out(f"g_scale = tl.reduce(gk * v{ir.root}, None, _add)")
        adjoint_defined: set[int] = set()
        grads: dict[str, list[str]] = {}

        def add_adjoint(node_id: int, expr: str) -> None:
            if node_id in adjoint_defined:
                out(f"a{node_id} += {expr}")
            else:
                out(f"a{node_id} = {expr}")
                adjoint_defined.add(node_id)

        add_adjoint(ir.root, "scale * gk")
        for k in reversed(plan.composites):
            node = ir.node(k)
            out(f"# {describe_node(ir, k)}")
            if isinstance(node, Sum):
                if node.fixed is not None:
                    for w, c in zip(node.fixed, node.children):
                        add_adjoint(c, f"{_float(w)} * a{k}")
                else:
                    for s, c in zip(node.weights, node.children):
                        grads.setdefault(f"w{s}", []).append(f"tl.reduce(a{k} * v{c}, None, _add)")
                        add_adjoint(c, f"w{s} * a{k}")
            else:
                for i, c in enumerate(node.children):
                    others = [f"v{o}" for j, o in enumerate(node.children) if j != i]
                    add_adjoint(c, " * ".join([f"a{k}", *others]))
        x_factors: dict[tuple[Distance, int], list[str]] = {}  # (distance, feature) -> summands of x_factor
        for t in plan.terms:
            term = ir.terms[t]
            code = _DISTANCE_CODE[plan.distance[t]]
            out(f"# {describe_node(ir, t)}")
            out(f"h{t} = a{t} * g{t}")
            for f, s in zip(term.features, term.lengthscales):
                grads.setdefault(f"l{s}", []).append(code.lengthscale_gradient.format(t=t, f=f, s=s))
                x_factors.setdefault((plan.distance[t], f), []).append(code.x_factor.format(t=t, f=f, s=s))
        out("# partial dL/d(lengthscales, weights, outputscale) of this program")
        out(f"gp = gparam_ptr + (b * tl.num_programs(0) + {'bm' if diag else 't'}) * {self.num_slots}")
        for slot in range(self.num_slots):
            if slot < ir.num_lengthscales:
                key, label = f"l{slot}", ir.lengthscale_names[slot]
            elif slot < ir.num_lengthscales + ir.num_weights:
                key, label = f"w{slot - ir.num_lengthscales}", ir.weight_names[slot - ir.num_lengthscales]
            else:
                key, label = "scale", "outputscale"
            terms = grads.get(key, [])
            value = "g_scale" if key == "scale" else (" + ".join(terms) if terms else "0.0")
            out(f"tl.store(gp + {slot}, {value})  # {label}")
        out("if WITH_X_GRAD:")
        out("# partial dL/dx1 (row sums) and dL/dx2 (column sums), one column per used feature", 2)
        F = len(plan.features)
        if diag:
            out(f"gx1_rows = gx1_ptr + (b * n + rows) * {F}", 2)
            out(f"gx2_rows = gx2_ptr + (b * n + rows) * {F}", 2)
        else:
            out("if SYMMETRIC:", 2)
            out("# x is x1 and x2: the column side of tile (bm, bn) goes to slot bm, a diagonal tile's to the extra slot", 3)
            out("cslot = tl.where(bm < bn, bm, (n + BLOCK_M - 1) // BLOCK_M)", 3)
            out("else:", 2)
            out("cslot = bm", 3)
            out("gx1_rows = gx1_ptr + b * gx1_sb + bn * gx1_ss + rows * gx1_sn", 2)
            out("gx2_rows = gx2_ptr + b * gx2_sb + cslot * gx2_ss + cols * gx2_sn", 2)
        for f in plan.features:
            i = plan.compact[f]
            expr = " + ".join(f"({' + '.join(x_factors[d, f])}) * {code.x_factor_of.format(f=f)}"
                              for d, code in _DISTANCE_CODE.items() if (d, f) in x_factors)
            out(f"xg{f} = {expr}  # dL/dx1 of {ir.features[f]}, per pair", 2)
            if diag:
                out(f"tl.store(gx1_rows + {i}, xg{f}, mask=rmask)", 2)
                out(f"tl.store(gx2_rows + {i}, -xg{f}, mask=rmask)", 2)
            else:
                out(f"tl.store(gx1_rows + {i}, tl.reduce(xg{f}, 1, _add), mask=rmask)", 2)
                out(f"tl.store(gx2_rows + {i}, -tl.reduce(xg{f}, 0, _add), mask=cmask)", 2)
        return "\n".join(out.lines) + "\n"


def generate(ir: KernelIR) -> GeneratedSource:
    """The Triton module source for ``ir`` (deterministic: same IR, same text)."""
    return _Generator(ir).module()
