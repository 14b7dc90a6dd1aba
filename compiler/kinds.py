"""Base-kernel kinds: one table entry per kind with everything every stage needs.

A kind is a function ``v = f(D)`` of one scaled distance ``D`` between two points,
with ``d_f = x1_f - x2_f`` and one lengthscale ``l_f`` per feature of the term:

- ``Distance.SQUARED``: ``D = r2 = sum_f d_f^2 / l_f^2`` (``r = sqrt(r2)``, the L2 distance);
- ``Distance.ABSOLUTE``: ``D = s = sum_f |d_f| / l_f`` (the L1 distance).

In the spirit of tinygrad's ``code_for_op`` (one table from op to code), each entry
(``Kind``) holds the kind's function names in the language (name and aliases), what
it is for, and its ``Math``, once per backend:

- ``distance`` and ``formula``;
- ``reference``: the gpytorch module of one term (the oracle);
- ``torch``: ``f`` as a differentiable torch function of ``D``;
- ``triton_value`` / ``triton_slope``: lines of generated Triton source setting
  ``v{k}`` and the slope ``g{k}`` from the distance variable (see ``Distance``),
  and ``triton_flops``, their arithmetic per pair (the GPU benchmark's floor);
- ``c_value`` / ``c_slope``: the same as C statements for the ``cpu`` backend.

The checker, the backends and the tests read this table: a new kind is one entry
here plus its row in the README's language table, and the tests sweep the table.
The IR names a kind by its ``name`` (plain data, stable fingerprints).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable

import torch
from gpytorch.kernels import Kernel, MaternKernel, RBFKernel
from torch.autograd.function import once_differentiable

from .errors import KernelError

_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)


class Distance(Enum):
    """The scaled distance a kind is a function of, and the meaning of its Triton slope ``g``.

    ``SQUARED``: ``r2 = sum_f d_f^2 / l_f^2``, Triton variable ``r2_{k}``; the slope is
    ``g = 2 dv/dr2 = f'(r) / r`` (finite at r = 0 for the smooth kinds), so that
    ``dv/dx1_f = g d_f / l_f^2`` and ``dv/dl_f = -g d_f^2 / l_f^3``.

    ``ABSOLUTE``: ``s = sum_f |d_f| / l_f``, Triton variable ``s_{k}``; the slope is
    ``g = dv/ds``, so that ``dv/dx1_f = g sign(d_f) / l_f`` (sign(0) = 0, the symmetric
    subgradient) and ``dv/dl_f = -g |d_f| / l_f^2``.
    """

    SQUARED = "squared"
    ABSOLUTE = "absolute"

    @property
    def variable(self) -> str:
        """Name prefix of the distance in generated Triton source (``r2_3``, ``s_3``)."""
        return "r2_" if self is Distance.SQUARED else "s_"


Lines = Callable[[int, str], tuple[str, ...]]
"""``(k, D) -> lines`` of Triton source for term ``k`` whose distance variable is named ``D``."""


@dataclass(frozen=True)
class Math:
    """A kind's function of the distance, once per backend (kinds may share one)."""

    distance: Distance
    formula: str
    """The value as a formula of ``r`` (squared-distance kinds) or ``s`` (absolute), for docs."""
    reference: Callable[..., Kernel]
    """gpytorch module of one term from ``Kernel`` keyword arguments (``ard_num_dims``, ``active_dims``,
    ``batch_shape``, ``lengthscale_prior``, ``lengthscale_constraint``)."""
    torch: Callable[[torch.Tensor], torch.Tensor]
    """``f(D)`` elementwise, differentiable (gradient finite at ``D = 0``)."""
    triton_value: Lines
    """Lines setting ``v{k}`` (temporaries are suffixed ``_{k}``)."""
    triton_slope: Lines
    """Lines setting ``g{k}`` (after the value lines; may use their temporaries)."""
    triton_flops: tuple[int, int]
    """Arithmetic per pair of the value and of the slope lines (exp, sqrt and division count one)."""
    c_value: Lines
    """C statements declaring ``v{k}`` (type ``real``; ``SQRT``, ``EXP``, ``R(literal)`` of the cpu backend)."""
    c_slope: Lines
    """C statements declaring ``g{k}`` (after the value statements; may use their temporaries)."""


@dataclass(frozen=True)
class Kind:
    """One base-kernel kind of the language."""

    name: str
    """Canonical name: the function name in the language and ``Term.kind`` in the IR."""
    aliases: tuple[str, ...]
    """Other function names of the same kind in the language."""
    use: str
    """What it is for, in a few words (docs)."""
    math: Math

    @property
    def functions(self) -> tuple[str, ...]:
        """Every function name of this kind in the language."""
        return (self.name, *self.aliases)

    @property
    def distance(self) -> Distance:
        return self.math.distance


# --- torch: functions of the distance with hand-written slopes ---------------------------

class _Fused(torch.autograd.Function):
    """``v = f(D)`` keeping only what the slope needs for backward (a few [terms, pairs] tables)."""

    @staticmethod
    def forward(ctx, distance: torch.Tensor, value_and_saved, slope) -> torch.Tensor:
        value, saved = value_and_saved(distance)
        ctx.slope = slope
        ctx.save_for_backward(*saved)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return ctx.slope(*ctx.saved_tensors).mul_(grad), None, None


def _fused(value_and_saved: Callable, slope: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(D)`` from ``value_and_saved(D) -> (v, saved)`` and ``slope(*saved) -> dv/dD``."""
    return lambda d: _Fused.apply(d, value_and_saved, slope)


# Matern kernels as functions of the squared distance: matern32/52 are smooth in r2 at 0
# (dv/dr2 = -3/2 e^{-a} and -5/6 (1 + a) e^{-a} with a = sqrt(3 or 5) r), so their gradients
# are exact at zero distance with no safe-sqrt trick; matern12 (-e^{-r} / 2r) gets the
# subgradient 0 there.

def _matern12(r2):
    r = r2.sqrt()
    value = r.neg().exp_()
    return value, (r, value)


def _matern12_slope(r, value):
    return torch.where(r > 0, value / r, 0.0).mul_(-0.5)


def _matern32(r2):
    a = r2.sqrt().mul_(_SQRT3)
    e = a.neg().exp_()
    return (a + 1.0).mul_(e), (e,)


def _matern32_slope(e):
    return e * -1.5


def _matern52(r2):
    a = r2.sqrt().mul_(_SQRT5)
    e = a.neg().exp_()
    return torch.add(a, r2, alpha=5.0 / 3.0).add_(1.0).mul_(e), (a, e)


def _matern52_slope(a, e):
    return (a + 1.0).mul_(e).mul_(-5.0 / 6.0)


def _exp_neg(d: torch.Tensor) -> torch.Tensor:
    return torch.exp(-d)


def _exp_neg_half(r2: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * r2)


# --- reference: gpytorch modules -----------------------------------------------------------

class L1ExponentialKernel(Kernel):
    """``exp(-sum_f |x1_f - x2_f| / l_f)``: an exponential kernel in the L1 metric.

    gpytorch has none (botorch's ``CategoricalKernel`` uses the mean of inequality
    indicators, a different kernel). Differences are taken directly, so the value
    and its gradient are exact where some ``x1_f == x2_f``.
    """

    has_lengthscale = True

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params) -> torch.Tensor:
        x1_ = x1.div(self.lengthscale)
        x2_ = x2.div(self.lengthscale)
        if diag:
            return torch.exp(-(x1_ - x2_).abs().sum(-1))
        return torch.exp(-(x1_.unsqueeze(-2) - x2_.unsqueeze(-3)).abs().sum(-1))


# --- the table ------------------------------------------------------------------------------

def _f(value: float) -> str:
    return repr(float(value))


_M12_SLOPE = "g{k} = tl.where({D} > 0, -v{k} / tl.where({D} > 0, r_{k}, 1.0), 0.0)  # 0 at r = 0"

_EXP_L1 = Math(
    Distance.ABSOLUTE, "exp(-s)",
    reference=L1ExponentialKernel,
    torch=_exp_neg,
    triton_value=lambda k, D: (f"v{k} = tl.exp(-{D})",),
    triton_slope=lambda k, D: (f"g{k} = -v{k}",),
    triton_flops=(1, 1),
    c_value=lambda k, D: (f"const real v{k} = EXP(-{D});",),
    c_slope=lambda k, D: (f"const real g{k} = -v{k};",))
"""exp of minus the L1 distance: the math of ``categorical`` and ``laplace``."""

_KINDS = (
    Kind("matern12", (), "rough numeric functions (Matern nu = 1/2)", Math(
        Distance.SQUARED, "exp(-r)",
        reference=functools.partial(MaternKernel, nu=0.5),
        torch=_fused(_matern12, _matern12_slope),
        triton_value=lambda k, D: (f"r_{k} = tl.sqrt({D})", f"v{k} = tl.exp(-r_{k})"),
        triton_slope=lambda k, D: (_M12_SLOPE.format(k=k, D=D),),
        triton_flops=(2, 3),
        c_value=lambda k, D: (f"const real r_{k} = SQRT({D});", f"const real v{k} = EXP(-r_{k});"),
        c_slope=lambda k, D: (f"const real g{k} = {D} > 0 ? -v{k} / r_{k} : R(0.0);  /* 0 at r = 0 */",))),
    Kind("matern32", (), "once-differentiable numeric functions", Math(
        Distance.SQUARED, "(1 + sqrt3 r) exp(-sqrt3 r)",
        reference=functools.partial(MaternKernel, nu=1.5),
        torch=_fused(_matern32, _matern32_slope),
        triton_value=lambda k, D: (f"r_{k} = tl.sqrt({D})",
                                   f"e_{k} = tl.exp(-{_f(_SQRT3)} * r_{k})",
                                   f"v{k} = (1.0 + {_f(_SQRT3)} * r_{k}) * e_{k}"),
        triton_slope=lambda k, D: (f"g{k} = -3.0 * e_{k}",),
        triton_flops=(5, 1),
        c_value=lambda k, D: (f"const real r_{k} = SQRT({D});",
                              f"const real e_{k} = EXP(-R({_f(_SQRT3)}) * r_{k});",
                              f"const real v{k} = (1 + R({_f(_SQRT3)}) * r_{k}) * e_{k};"),
        c_slope=lambda k, D: (f"const real g{k} = -3 * e_{k};",))),
    Kind("matern52", (), "twice-differentiable numeric functions (the default kind)", Math(
        Distance.SQUARED, "(1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r)",
        reference=functools.partial(MaternKernel, nu=2.5),
        torch=_fused(_matern52, _matern52_slope),
        triton_value=lambda k, D: (f"r_{k} = tl.sqrt({D})",
                                   f"e_{k} = tl.exp(-{_f(_SQRT5)} * r_{k})",
                                   f"v{k} = (1.0 + {_f(_SQRT5)} * r_{k} + {_f(5 / 3)} * {D}) * e_{k}"),
        triton_slope=lambda k, D: (f"g{k} = -{_f(5 / 3)} * (1.0 + {_f(_SQRT5)} * r_{k}) * e_{k}",),
        triton_flops=(7, 4),
        c_value=lambda k, D: (f"const real r_{k} = SQRT({D});",
                              f"const real e_{k} = EXP(-R({_f(_SQRT5)}) * r_{k});",
                              f"const real v{k} = (1 + R({_f(_SQRT5)}) * r_{k} + R({_f(5 / 3)}) * {D}) * e_{k};"),
        c_slope=lambda k, D: (f"const real g{k} = -R({_f(5 / 3)}) * (1 + R({_f(_SQRT5)}) * r_{k}) * e_{k};",))),
    Kind("rbf", (), "smooth numeric functions", Math(
        Distance.SQUARED, "exp(-r^2 / 2)",
        reference=RBFKernel,
        torch=_exp_neg_half,
        triton_value=lambda k, D: (f"v{k} = tl.exp(-0.5 * {D})",),
        triton_slope=lambda k, D: (f"g{k} = -v{k}",),
        triton_flops=(2, 1),
        c_value=lambda k, D: (f"const real v{k} = EXP(R(-0.5) * {D});",),
        c_slope=lambda k, D: (f"const real g{k} = -v{k};",))),
    Kind("categorical", ("hamming",), "one-hot / n-hot choice features", _EXP_L1),
    Kind("laplace", (), "rough numeric functions, separable per feature (product of 1-D matern12)", _EXP_L1),
)

KINDS: dict[str, Kind] = {kind.name: kind for kind in _KINDS}
"""Every base-kernel kind by canonical name, in a fixed order (the backends' block order)."""

KIND_NAMES: tuple[str, ...] = tuple(KINDS)

BY_FUNCTION: dict[str, Kind] = {f: kind for kind in _KINDS for f in kind.functions}
"""Every base-kernel function name of the language (names and aliases) -> its kind."""


def kind_of(name: str, label: str = "") -> Kind:
    """The kind named ``name`` (an IR's ``Term.kind``); a ``KernelError`` for an unknown one."""
    try:
        return KINDS[name]
    except KeyError:
        where = f"term '{label}' has " if label else ""
        raise KernelError(f"{where}unknown base-kernel kind '{name}'",
                          hint=f"known kinds: {', '.join(KIND_NAMES)}") from None
