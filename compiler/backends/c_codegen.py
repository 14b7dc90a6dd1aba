"""Generate the C source of the ``cpu`` backend's fused kernels, specialised to one KernelIR.

The CPU twin of ``triton_codegen``: straight-line code per pair of points, with the
features read, the terms and the sum/product tree as compile-time constants and the
hyperparameters read per batch element, so that refitting never recompiles. Six
exported functions per IR (``real`` is ``double``, or ``float`` with ``-DKD_FLOAT``):

- ``kd_forward``: rows of K, one (batch element, row) per OpenMP task, the columns
  of a row in one ``omp simd`` loop; when ``x1`` is ``x2`` only the upper triangle is
  computed and then mirrored;
- ``kd_forward_diag``: diag K, chunks of rows per task;
- ``kd_backward_x`` / ``kd_backward``: given dL/dK, recompute every pair of a row
  and write the row's partial sums of dL/d(lengthscales, weights, outputscale), with
  and without dL/dx1, dL/dx2 (nothing of size terms x pairs is stored);
- ``kd_backward_diag_x`` / ``kd_backward_diag``: the same for the diag path.

Inputs are compact over the used features (``F`` columns, in ``used_features`` order):
rows ``x1 [B, n, F]`` and feature-major ``x2t [B, F, m]``, so that the columns of a row
are contiguous. Partial gradients go to per-row (per-chunk) slots and per-thread
buffers that torch sums afterwards, with a static schedule: the result depends on the
thread count only, not on timing. Each term's value and slope come from its kind's
``c_value`` / ``c_slope`` in ``kinds.KINDS``; the chain rule through the distance is
the distance type's (``_DISTANCE_CODE``, the same formulas as ``triton_codegen``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import KernelIR, Product, Sum, Term
from ..kinds import Distance, kind_of
from .codegen import FusedPlan, GeneratedSource, Lines, count, describe_node, literal

CODEGEN_VERSION = "1"
"""Bumped whenever the generated code changes meaning (part of the cache key)."""

DIAG_CHUNK = 256
"""Rows per task of the diag kernels."""


@dataclass(frozen=True)
class _DistanceCode:
    """C templates of one distance type; fields ``f`` (feature), ``s`` (slot), ``t`` (term)."""

    power: str
    """Per feature: the power of the difference ``d{f}`` that the distance sums."""
    inverse: str
    """Per lengthscale slot: the factor of the power in the distance."""
    term: str
    """One (feature, slot) summand of the distance."""
    accumulator: str
    """Per slot: the row sum of ``h{t} * power`` over the pairs (``h = dL/dv * g``)."""
    lengthscale_gradient: str
    """Per slot: dL/dl from its accumulator."""
    x_factor: str
    """Per (term, feature): its summand of the factor of ``x_factor_of`` in dL/dx1."""
    x_factor_of: str
    """Per feature: what the summed ``x_factor`` terms multiply in dL/dx1."""
    backward: tuple[str, ...] = ()
    """Extra per-feature statements of the backward kernels."""


_DISTANCE_CODE = {
    Distance.SQUARED: _DistanceCode(
        power="const real sq{f} = d{f} * d{f};", inverse="const real c{s} = 1 / (l{s} * l{s});",
        term="sq{f} * c{s}", accumulator="gq{s}", lengthscale_gradient="gq{s} * (-c{s} / l{s})",
        x_factor="c{s} * h{t}", x_factor_of="d{f}"),
    Distance.ABSOLUTE: _DistanceCode(
        power="const real ad{f} = ABS(d{f});", inverse="const real il{s} = 1 / l{s};",
        term="ad{f} * il{s}", accumulator="ga{s}", lengthscale_gradient="ga{s} * (-il{s} * il{s})",
        x_factor="h{t} * il{s}", x_factor_of="sg{f}",
        backward=("const real sg{f} = (real)((d{f} > 0) - (d{f} < 0));",)),
}

_POWER_NAME = {Distance.SQUARED: "sq{f}", Distance.ABSOLUTE: "ad{f}"}

_PRELUDE = """\
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#else
#define omp_get_thread_num() 0
#endif

#ifdef KD_FLOAT
typedef float real;
#define SQRT sqrtf
#define EXP expf
#define ABS fabsf
#else
typedef double real;
#define SQRT sqrt
#define EXP exp
#define ABS fabs
#endif
#define R(literal) ((real)(literal))

#if defined(KD_VECTOR_MATH) && defined(_OPENMP)
/* glibc's libmvec has SIMD variants of exp (declared by math.h only under -ffast-math):
   declaring them lets the omp simd loops below call them instead of one exp per lane. */
#pragma omp declare simd notinbranch
extern double exp(double);
#pragma omp declare simd notinbranch
extern float expf(float);
#endif

#define KD_EXPORT __attribute__((visibility("default")))

/* K(x, x): copy the upper triangle onto the lower one, 64 x 64 blocks at a time. */
static void kd_mirror(real *restrict out, int64_t B, int64_t n, int32_t threads)
{
    const int64_t blocks = (n + 63) / 64;
    #pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int64_t task = 0; task < B * blocks; task++) {
        real *o = out + (task / blocks) * n * n;
        const int64_t bi = task % blocks, i_end = bi * 64 + 64 < n ? bi * 64 + 64 : n;
        for (int64_t bj = 0; bj <= bi; bj++)
            for (int64_t i = bi * 64; i < i_end; i++)
                for (int64_t j = bj * 64; j < bj * 64 + 64 && j < i; j++)
                    o[i * n + j] = o[j * n + i];
    }
}
"""


class _Generator:
    """Emits the C functions of one IR."""

    def __init__(self, ir: KernelIR):
        self.ir = ir
        self.plan = FusedPlan(ir)
        self.num_slots = ir.num_lengthscales + ir.num_weights + 1
        self.F = len(self.plan.features)

    def module(self) -> GeneratedSource:
        ir, plan = self.ir, self.plan
        kinds = sorted({ir.terms[t].kind for t in plan.terms})
        head = [
            "/* Fused covariance kernels generated by kerneldsl (cpu backend). Do not edit.",
            f" * IR fingerprint {ir.fingerprint()} (codegen v{CODEGEN_VERSION}): {count(len(plan.terms), 'term')} "
            f"({', '.join(kinds)}) over {len(plan.features)} of {len(ir.features)} features,",
            f" * {count(ir.num_lengthscales, 'lengthscale')}, {count(ir.num_weights, 'sum weight')}.",
            f" * Inputs are compact over the used features (F = {self.F}): rows x1 [B, n, F], columns x2t [B, F, m].",
            " * Parameter-gradient slots: lengthscales 0..P-1, weights P..P+W-1, outputscale P+W.",
            " */",
        ]
        body = [self._forward(), self._forward_diag(),
                self._backward(with_x=True), self._backward(with_x=False),
                self._backward_diag(with_x=True), self._backward_diag(with_x=False)]
        source = "\n".join(head) + "\n" + _PRELUDE + "\n" + "\n".join(body)
        return GeneratedSource(source=source, used_features=tuple(plan.features),
                               num_lengthscales=ir.num_lengthscales, num_weights=ir.num_weights)

    # --- pieces shared by the functions -------------------------------------------------
    def _parameters(self, out: Lines, indent: int) -> None:
        """The hyperparameters of batch element ``b``."""
        plan, ir = self.plan, self.ir
        if plan.slots:
            out("/* lengthscales of this batch element (c = 1 / l^2, il = 1 / l) */", indent)
        for s in plan.slots:
            out(f"const real l{s} = ls[b * {ir.num_lengthscales} + {s}];  /* {ir.lengthscale_names[s]} */", indent)
            for distance, code in _DISTANCE_CODE.items():
                if s in plan.distance_slots[distance]:
                    out(code.inverse.format(s=s), indent)
        if plan.weight_slots:
            out("/* softmaxed sum weights */", indent)
        for s in plan.weight_slots:
            out(f"const real w{s} = w[b * {ir.num_weights} + {s}];  /* {ir.weight_names[s]} */", indent)
        out("const real scale_b = scale[b];", indent)

    def _differences(self, out: Lines, indent: int, backward: bool, diag: bool) -> None:
        """``d{f} = x1_f - x2_f`` of the pair and its powers; row values are loaded before the loop."""
        plan, ir = self.plan, self.ir
        for f in plan.features:
            c = plan.compact[f]
            first = f"xa[{c} * n + i]" if diag else f"x1_{f}"
            second = f"xb[{c} * n + i]" if diag else f"xb[{c} * m + j]"
            out(f"const real d{f} = {first} - {second};  /* {ir.features[f]} */", indent)
            used = [code for distance, code in _DISTANCE_CODE.items() if f in plan.distance_features[distance]]
            for code in used:
                out(code.power.format(f=f), indent)
            for line in (line for code in used for line in code.backward) if backward else ():
                out(line.format(f=f), indent)

    def _row_task(self, out: Lines) -> None:
        """The OpenMP loop over tasks (batch element b, row i) of K, with the task's hyperparameters and row."""
        out("#pragma omp parallel for schedule(static, 1) num_threads(threads)")
        out("for (int64_t task = 0; task < B * n; task++) {")
        out("const int64_t b = task / n, i = task % n;", 2)
        self._parameters(out, 2)
        self._row_features(out, 2)

    def _row_features(self, out: Lines, indent: int) -> None:
        plan, ir = self.plan, self.ir
        out("/* row i of x1 and the columns of x2 (feature-major) */", indent)
        out(f"const real *xr = x1 + task * {self.F};", indent)
        for f in plan.features:
            out(f"const real x1_{f} = xr[{plan.compact[f]}];  /* {ir.features[f]} */", indent)
        out(f"const real *xb = x2t + b * {self.F} * m;", indent)

    def _values(self, out: Lines, indent: int, backward: bool) -> None:
        """Every reachable node's value ``v<id>`` (and each term's slope ``g<id>`` for backward)."""
        ir = self.ir
        for k in self.plan.order:
            node = ir.node(k)
            out(f"/* {describe_node(ir, k)} */", indent)
            if isinstance(node, Term):
                kind = kind_of(node.kind, node.label)
                code = _DISTANCE_CODE[kind.distance]
                distance = f"{kind.distance.variable}{k}"
                out(f"const real {distance} = "
                    + " + ".join(code.term.format(f=f, s=s) for f, s in zip(node.features, node.lengthscales))
                    + ";", indent)
                for line in kind.math.c_value(k, distance) + (kind.math.c_slope(k, distance) if backward else ()):
                    out(line, indent)
            elif isinstance(node, Product):
                out(f"const real v{k} = " + " * ".join(f"v{c}" for c in node.children) + ";", indent)
            else:
                weights = ([f"R({literal(w)})" for w in node.fixed] if node.fixed is not None
                           else [f"w{s}" for s in node.weights])
                out(f"const real v{k} = " + " + ".join(f"{w} * v{c}" for w, c in zip(weights, node.children))
                    + ";", indent)

    def _adjoints(self, out: Lines, indent: int, with_x: bool, column: str | None) -> list[str]:
        """Reverse sweep of one pair from ``gk = dL/dK``; returns the accumulators it adds to.

        ``column``: where the pair's dL/dx2 goes (``None``: the diag path, written by the caller).
        """
        ir, plan = self.ir, self.plan
        accumulators = ["gs"]
        out("gs += gk * v%d;" % ir.root, indent)
        out("/* adjoints a<id> = dL/d(value of node id), from the root down */", indent)
        defined: set[int] = set()

        def add(node_id: int, expr: str) -> None:
            if node_id in defined:
                out(f"a{node_id} += {expr};", indent)
            else:
                out(f"real a{node_id} = {expr};", indent)
                defined.add(node_id)

        add(ir.root, "scale_b * gk")
        for k in reversed(plan.composites):
            node = ir.node(k)
            out(f"/* {describe_node(ir, k)} */", indent)
            if isinstance(node, Sum):
                if node.fixed is not None:
                    for w, c in zip(node.fixed, node.children):
                        add(c, f"R({literal(w)}) * a{k}")
                else:
                    for s, c in zip(node.weights, node.children):
                        out(f"gw{s} += a{k} * v{c};", indent)
                        if f"gw{s}" not in accumulators:
                            accumulators.append(f"gw{s}")
                        add(c, f"w{s} * a{k}")
            else:
                for i, c in enumerate(node.children):
                    others = [f"v{o}" for j, o in enumerate(node.children) if j != i]
                    add(c, " * ".join([f"a{k}", *others]))
        x_factors: dict[tuple[Distance, int], list[str]] = {}
        for t in plan.terms:
            term = ir.terms[t]
            distance = plan.distance[t]
            code = _DISTANCE_CODE[distance]
            out(f"/* {describe_node(ir, t)} */", indent)
            out(f"const real h{t} = a{t} * g{t};", indent)
            for f, s in zip(term.features, term.lengthscales):
                name = code.accumulator.format(s=s)
                out(f"{name} += h{t} * {_POWER_NAME[distance].format(f=f)};", indent)
                if name not in accumulators:
                    accumulators.append(name)
                x_factors.setdefault((distance, f), []).append(code.x_factor.format(t=t, f=f, s=s))
        if with_x:
            out("/* dL/dx1 of this pair per used feature (dL/dx2 is its negative) */", indent)
            for f in plan.features:
                c = plan.compact[f]
                expr = " + ".join(f"({' + '.join(x_factors[d, f])}) * {code.x_factor_of.format(f=f)}"
                                  for d, code in _DISTANCE_CODE.items() if (d, f) in x_factors)
                out(f"const real xg{f} = {expr};  /* {ir.features[f]} */", indent)
                if column is None:
                    out(f"gx[(b * {self.F} + {c}) * n + i] = xg{f};", indent)
                else:
                    out(f"ax{f} += xg{f};", indent)
                    out(f"gc[{c} * {column} + j] -= xg{f};", indent)
                    accumulators.append(f"ax{f}")
        return accumulators

    def _store_parameter_gradients(self, out: Lines, indent: int, row: str) -> None:
        """Write one task's partial dL/d(lengthscales, weights, outputscale) to ``gparam[row]``."""
        plan, ir = self.plan, self.ir
        out(f"real *gp = gparam + {row} * {self.num_slots};", indent)
        for slot in range(self.num_slots):
            key, label = plan.slot_label(slot)
            if key == "scale":
                value = "gs"
            elif slot < ir.num_lengthscales:
                value = " + ".join(code.lengthscale_gradient.format(s=slot) for d, code in _DISTANCE_CODE.items()
                                   if slot in plan.distance_slots[d]) or "0"
            else:
                weight = slot - ir.num_lengthscales
                value = f"gw{weight}" if weight in plan.weight_slots else "0"
            out(f"gp[{slot}] = {value};  /* {label} */", indent)

    @staticmethod
    def _declare(out: Lines, indent: int, accumulators: list[str]) -> None:
        for i in range(0, len(accumulators), 8):
            out("real " + ", ".join(f"{a} = 0" for a in accumulators[i:i + 8]) + ";", indent)

    # --- forward ---------------------------------------------------------------------
    def _forward(self) -> str:
        out = Lines()
        out("/* Rows of K = outputscale * k(x1, x2) [B, n, m]; symmetric: x2t holds x1, upper triangle then mirror. */", 0)
        out("KD_EXPORT void kd_forward(const real *restrict x1, const real *restrict x2t, const real *restrict ls,", 0)
        out("                          const real *restrict w, const real *restrict scale, int64_t B, int64_t n,", 0)
        out("                          int64_t m, int32_t symmetric, real *restrict out, int32_t threads)", 0)
        out("{", 0)
        self._row_task(out)
        out("real *o = out + task * m;", 2)
        self._forward_loop(out, diag=False)
        out("}")
        out("if (symmetric)")
        out("kd_mirror(out, B, n, threads);", 2)
        out("}", 0)
        return "\n".join(out.lines) + "\n"

    def _forward_diag(self) -> str:
        out = Lines()
        out("/* diag K [B, n] from feature-major x1t, x2t [B, F, n]. */", 0)
        out("KD_EXPORT void kd_forward_diag(const real *restrict x1t, const real *restrict x2t, const real *restrict ls,", 0)
        out("                               const real *restrict w, const real *restrict scale, int64_t B, int64_t n,", 0)
        out("                               real *restrict out, int32_t threads)", 0)
        out("{", 0)
        self._diag_loop(out)
        self._forward_loop(out, diag=True)
        out("}")
        out("}", 0)
        return "\n".join(out.lines) + "\n"

    def _forward_loop(self, out: Lines, diag: bool) -> None:
        """The SIMD loop of one task's pairs (columns j of row i, or rows i of a diag chunk), storing K."""
        out("#pragma omp simd", 2)
        out("for (int64_t i = lo; i < hi; i++) {" if diag else "for (int64_t j = symmetric ? i : 0; j < m; j++) {", 2)
        self._differences(out, 3, backward=False, diag=diag)
        self._values(out, 3, backward=False)
        out(f"{'out[b * n + i]' if diag else 'o[j]'} = scale_b * v{self.ir.root};", 3)
        out("}", 2)

    def _diag_loop(self, out: Lines) -> None:
        out(f"const int64_t chunks = (n + {DIAG_CHUNK} - 1) / {DIAG_CHUNK};")
        out("#pragma omp parallel for schedule(static, 1) num_threads(threads)")
        out("for (int64_t task = 0; task < B * chunks; task++) {")
        out(f"const int64_t b = task / chunks, lo = (task % chunks) * {DIAG_CHUNK};", 2)
        out(f"const int64_t hi = lo + {DIAG_CHUNK} < n ? lo + {DIAG_CHUNK} : n;", 2)
        self._parameters(out, 2)
        out(f"const real *xa = x1t + b * {self.F} * n, *xb = x2t + b * {self.F} * n;", 2)

    # --- backward ----------------------------------------------------------------------
    def _backward(self, with_x: bool) -> str:
        out = Lines()
        name = "kd_backward_x" if with_x else "kd_backward"
        out("/* Recompute every pair of a row from dL/dK (symmetric: G + G^T with its diagonal halved, upper", 0)
        out(" * triangle) and write the row's partial parameter gradients gparam [B * n, S]"
            + ("; dL/dx1 row sums to gxrow [B, n, F]," if with_x else ". */"), 0)
        if with_x:
            out(" * dL/dx2 column sums to this thread's gxcol [threads, B, F, m] (the symmetric case: both are x). */", 0)
        out(f"KD_EXPORT void {name}(const real *restrict x1, const real *restrict x2t, const real *restrict ls,", 0)
        out("    const real *restrict w, const real *restrict scale, int64_t B, int64_t n, int64_t m, int32_t symmetric,", 0)
        out("    const real *restrict g, real *restrict gparam, real *restrict gxrow, real *restrict gxcol, int32_t threads)", 0)
        out("{", 0)
        self._row_task(out)
        out("const real *gr = g + task * m;", 2)
        if with_x:
            out(f"real *gc = gxcol + ((int64_t)omp_get_thread_num() * B + b) * {self.F} * m;", 2)
        self._backward_loop(out, with_x, diag=False)
        if with_x:
            for f in self.plan.features:
                out(f"gxrow[task * {self.F} + {self.plan.compact[f]}] = ax{f};", 2)
        out("}")
        out("}", 0)
        return "\n".join(out.lines) + "\n"

    def _backward_loop(self, out: Lines, with_x: bool, diag: bool) -> None:
        """The SIMD loop of one task's pairs (columns j of row i, or rows i of a diag chunk) with its
        reductions, then the task's partial parameter gradients."""
        body = Lines()
        accumulators = self._adjoints(body, 3, with_x, column=None if diag else "m")
        self._declare(out, 2, accumulators)
        out(f"#pragma omp simd reduction(+: {', '.join(accumulators)})", 2)
        out("for (int64_t i = lo; i < hi; i++) {" if diag else "for (int64_t j = symmetric ? i : 0; j < m; j++) {", 2)
        self._differences(out, 3, backward=True, diag=diag)
        self._values(out, 3, backward=True)
        out("const real gk = g[b * n + i];" if diag else "const real gk = gr[j];", 3)
        out.lines += body.lines
        out("}", 2)
        self._store_parameter_gradients(out, 2, "task")

    def _backward_diag(self, with_x: bool) -> str:
        out = Lines()
        name = "kd_backward_diag_x" if with_x else "kd_backward_diag"
        out("/* The diag path's backward: partial parameter gradients gparam [B * chunks, S]"
            + ("; dL/dx1 to gx [B, F, n] (dL/dx2 is its negative). */" if with_x else ". */"), 0)
        out(f"KD_EXPORT void {name}(const real *restrict x1t, const real *restrict x2t, const real *restrict ls,", 0)
        out("    const real *restrict w, const real *restrict scale, int64_t B, int64_t n,", 0)
        out("    const real *restrict g, real *restrict gparam, real *restrict gx, int32_t threads)", 0)
        out("{", 0)
        self._diag_loop(out)
        self._backward_loop(out, with_x, diag=True)
        out("}")
        out("}", 0)
        return "\n".join(out.lines) + "\n"


def generate(ir: KernelIR) -> GeneratedSource:
    """The C source for ``ir`` (deterministic: same IR, same text)."""
    return _Generator(ir).module()
