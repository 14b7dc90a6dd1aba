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
thread count only, not on timing. What each pair computes, forward and backward, is
``codegen.PairCode``'s walk (shared with ``triton_codegen``), spelled in C by ``C_DIALECT``;
each term's value and slope come from its kind's ``c_value`` / ``c_slope`` in ``kinds.KINDS``.
"""

from __future__ import annotations

from operator import attrgetter

from ..ir import KernelIR
from ..kinds import Distance
from .codegen import SLOTS_NOTE, Dialect, GeneratedSource, Generator, Lines, PairCode, PairGradients, literal

CODEGEN_VERSION = "1"
"""Bumped whenever the generated code changes meaning (part of the cache key)."""

DIAG_CHUNK = 256
"""Rows per task of the diag kernels."""


C_DIALECT = Dialect(
    comment="/* {} */", define="const real {} = {};", declare="real {} = {};", increment="{} += {};",
    literal=lambda value: f"R({literal(value)})", zero="0",
    power={Distance.SQUARED: "d{f} * d{f}", Distance.ABSOLUTE: "ABS(d{f})"},
    inverse={Distance.SQUARED: "1 / (l{s} * l{s})", Distance.ABSOLUTE: "1 / l{s}"},
    sign="(real)((d{f} > 0) - (d{f} < 0))", value=attrgetter("c_value"), slope=attrgetter("c_slope"),
    lengthscale="ls[b * {P} + {s}]", weight="w[b * {W} + {s}]", scale="scale_b", scale_load="scale[b]",
    scale_gradient="gs", reduce=None)
"""C spellings of the shared walk; partial gradients are accumulated in the SIMD loop of a task's pairs."""

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

# The exported functions' comments and signatures.
_FORWARD = """\
/* Rows of K = outputscale * k(x1, x2) [B, n, m]; symmetric: x2t holds x1, upper triangle then mirror. */
KD_EXPORT void kd_forward(const real *restrict x1, const real *restrict x2t, const real *restrict ls,
                          const real *restrict w, const real *restrict scale, int64_t B, int64_t n,
                          int64_t m, int32_t symmetric, real *restrict out, int32_t threads)
{"""
_FORWARD_DIAG = """\
/* diag K [B, n] from feature-major x1t, x2t [B, F, n]. */
KD_EXPORT void kd_forward_diag(const real *restrict x1t, const real *restrict x2t, const real *restrict ls,
                               const real *restrict w, const real *restrict scale, int64_t B, int64_t n,
                               real *restrict out, int32_t threads)
{"""
_BACKWARD = """\
/* Recompute every pair of a row from dL/dK (symmetric: G + G^T with its diagonal halved, upper
 * triangle) and write the row's partial parameter gradients gparam [B * n, S]{note}
KD_EXPORT void kd_backward{x}(const real *restrict x1, const real *restrict x2t, const real *restrict ls,
    const real *restrict w, const real *restrict scale, int64_t B, int64_t n, int64_t m, int32_t symmetric,
    const real *restrict g, real *restrict gparam, real *restrict gxrow, real *restrict gxcol, int32_t threads)
{{"""
_BACKWARD_DIAG = """\
/* The diag path's backward: partial parameter gradients gparam [B * chunks, S]{note}
KD_EXPORT void kd_backward_diag{x}(const real *restrict x1t, const real *restrict x2t, const real *restrict ls,
    const real *restrict w, const real *restrict scale, int64_t B, int64_t n,
    const real *restrict g, real *restrict gparam, real *restrict gx, int32_t threads)
{{"""


class _Generator(Generator):
    """Emits the C functions of one IR."""

    dialect, version = C_DIALECT, CODEGEN_VERSION

    def module(self) -> GeneratedSource:
        fingerprint, counts = self.summary()
        head = [
            "/* Fused covariance kernels generated by kerneldsl (cpu backend). Do not edit.",
            f" * {fingerprint}",
            f" * {counts}",
            f" * Inputs are compact over the used features (F = {self.F}): rows x1 [B, n, F], columns x2t [B, F, m].",
            f" * {SLOTS_NOTE}",
            " */",
        ]
        body = [self._forward(), self._forward_diag(),
                self._backward(with_x=True), self._backward(with_x=False),
                self._backward_diag(with_x=True), self._backward_diag(with_x=False)]
        return self.generated("\n".join(head) + "\n" + _PRELUDE + "\n" + "\n".join(body))

    # --- pieces shared by the functions -------------------------------------------------
    def _differences(self, out: Lines, indent: int, backward: bool, diag: bool) -> None:
        """``d{f} = x1_f - x2_f`` of the pair and its powers; row values are loaded before the loop."""
        plan, ir = self.plan, self.ir
        for f in plan.features:
            c = plan.compact[f]
            first = f"xa[{c} * n + i]" if diag else f"x1_{f}"
            second = f"xb[{c} * n + i]" if diag else f"xb[{c} * m + j]"
            out(f"const real d{f} = {first} - {second};  /* {ir.features[f]} */", indent)
            self.code.powers(out, f, indent, backward)

    def _row_task(self, out: Lines) -> None:
        """The OpenMP loop over tasks (batch element b, row i) of K, with the task's hyperparameters and row."""
        out("#pragma omp parallel for schedule(static, 1) num_threads(threads)")
        out("for (int64_t task = 0; task < B * n; task++) {")
        out("const int64_t b = task / n, i = task % n;", 2)
        self.code.parameters(out, 2)
        self._row_features(out, 2)

    def _row_features(self, out: Lines, indent: int) -> None:
        plan, ir = self.plan, self.ir
        out("/* row i of x1 and the columns of x2 (feature-major) */", indent)
        out(f"const real *xr = x1 + task * {self.F};", indent)
        for f in plan.features:
            out(f"const real x1_{f} = xr[{plan.compact[f]}];  /* {ir.features[f]} */", indent)
        out(f"const real *xb = x2t + b * {self.F} * m;", indent)

    def _sweep(self, out: Lines, indent: int, with_x: bool, diag: bool) -> PairGradients:
        """Reverse sweep of one pair from ``gk = dL/dK``, then its dL/dx1 (and dL/dx2 off the diag path)."""
        plan, ir, grads = self.plan, self.ir, PairGradients()
        self.code.scale_partial(out, indent, grads)
        out(f"/* {PairCode.ADJOINTS} */", indent)
        self.code.adjoints(out, indent, grads)
        if with_x:
            out("/* dL/dx1 of this pair per used feature (dL/dx2 is its negative) */", indent)
        for f in plan.features if with_x else ():
            c = plan.compact[f]
            out(self.code.define(f"xg{f}", self.code.x_gradient(f, grads), ir.features[f]), indent)
            if diag:
                out(f"gx[(b * {self.F} + {c}) * n + i] = xg{f};", indent)
            else:
                out(f"ax{f} += xg{f};", indent)
                out(f"gc[{c} * m + j] -= xg{f};", indent)
                grads.accumulators.append(f"ax{f}")
        return grads

    @staticmethod
    def _declare(out: Lines, indent: int, accumulators: list[str]) -> None:
        for i in range(0, len(accumulators), 8):
            out("real " + ", ".join(f"{a} = 0" for a in accumulators[i:i + 8]) + ";", indent)

    # --- forward ---------------------------------------------------------------------
    def _forward(self) -> str:
        out = Lines(_FORWARD)
        self._row_task(out)
        out("real *o = out + task * m;", 2)
        self._forward_loop(out, diag=False)
        out("}")
        out("if (symmetric)")
        out("kd_mirror(out, B, n, threads);", 2)
        out("}", 0)
        return out.text()

    def _forward_diag(self) -> str:
        out = Lines(_FORWARD_DIAG)
        self._diag_loop(out)
        self._forward_loop(out, diag=True)
        out("}")
        out("}", 0)
        return out.text()

    def _forward_loop(self, out: Lines, diag: bool) -> None:
        """The SIMD loop of one task's pairs (columns j of row i, or rows i of a diag chunk), storing K."""
        out("#pragma omp simd", 2)
        out("for (int64_t i = lo; i < hi; i++) {" if diag else "for (int64_t j = symmetric ? i : 0; j < m; j++) {", 2)
        self._differences(out, 3, backward=False, diag=diag)
        self.code.values(out, 3, backward=False)
        out(f"{'out[b * n + i]' if diag else 'o[j]'} = scale_b * v{self.ir.root};", 3)
        out("}", 2)

    def _diag_loop(self, out: Lines) -> None:
        out(f"const int64_t chunks = (n + {DIAG_CHUNK} - 1) / {DIAG_CHUNK};")
        out("#pragma omp parallel for schedule(static, 1) num_threads(threads)")
        out("for (int64_t task = 0; task < B * chunks; task++) {")
        out(f"const int64_t b = task / chunks, lo = (task % chunks) * {DIAG_CHUNK};", 2)
        out(f"const int64_t hi = lo + {DIAG_CHUNK} < n ? lo + {DIAG_CHUNK} : n;", 2)
        self.code.parameters(out, 2)
        out(f"const real *xa = x1t + b * {self.F} * n, *xb = x2t + b * {self.F} * n;", 2)

    # --- backward ----------------------------------------------------------------------
    def _backward(self, with_x: bool) -> str:
        out = Lines(_BACKWARD.format(
            x="_x" if with_x else "", note="; dL/dx1 row sums to gxrow [B, n, F],\n * dL/dx2 column sums to this "
            "thread's gxcol [threads, B, F, m] (the symmetric case: both are x). */" if with_x else ". */"))
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
        return out.text()

    def _backward_loop(self, out: Lines, with_x: bool, diag: bool) -> None:
        """The SIMD loop of one task's pairs (columns j of row i, or rows i of a diag chunk) with its
        reductions, then the task's partial parameter gradients."""
        body = Lines()
        grads = self._sweep(body, 3, with_x, diag)
        self._declare(out, 2, grads.accumulators)
        out(f"#pragma omp simd reduction(+: {', '.join(grads.accumulators)})", 2)
        out("for (int64_t i = lo; i < hi; i++) {" if diag else "for (int64_t j = symmetric ? i : 0; j < m; j++) {", 2)
        self._differences(out, 3, backward=True, diag=diag)
        self.code.values(out, 3, backward=True)
        out("const real gk = g[b * n + i];" if diag else "const real gk = gr[j];", 3)
        out.lines += body.lines
        out("}", 2)
        out(f"real *gp = gparam + task * {self.num_slots};", 2)
        for slot in range(self.num_slots):
            out(f"gp[{slot}] = {self.code.parameter_gradient(slot, grads)};  /* {self.plan.slot_label(slot)[1]} */", 2)

    def _backward_diag(self, with_x: bool) -> str:
        out = Lines(_BACKWARD_DIAG.format(x="_x" if with_x else "",
                                          note="; dL/dx1 to gx [B, F, n] (dL/dx2 is its negative). */" if with_x
                                          else ". */"))
        self._diag_loop(out)
        self._backward_loop(out, with_x, diag=True)
        out("}")
        out("}", 0)
        return out.text()


def generate(ir: KernelIR) -> GeneratedSource:
    """The C source for ``ir`` (deterministic: same IR, same text)."""
    return _Generator(ir).module()
