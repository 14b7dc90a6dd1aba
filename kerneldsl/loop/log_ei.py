"""The closed-form acquisitions' functions of normal variables, with their derivatives in closed form.

* `log_h`: ``log(phi(u) + u Phi(u))``, the log of expected improvement in units of the posterior standard
  deviation (``u = (best - mean) / sd`` when minimising), accurate far into the tail (Ament et al. 2023,
  "Unexpected improvements to expected improvement", the formulation of botorch's ``LogExpectedImprovement``);
  ``d log_h / du = Phi(u) / h(u)`` (since ``h'(u) = Phi(u)``);
* `log_Phi`: ``log Phi(z)``, the log probability that a normal output is below a bound ``z`` standard
  deviations above its mean; ``d log_Phi / dz = phi(z) / Phi(z)``;
* `log_ei_within_bounds`: log EI of one output plus the log probabilities of the others' bounds, from the
  outputs' means and variances: the value of `kerneldsl.loop.acquisition.LogEIWithinBounds`.

Each is one autograd node whose value and derivatives are computed in float64 by scipy's special functions
(``log_ndtr``, ``erfcx``) on the host, where a few values cost a microsecond per function instead of a few
per torch operation: an acquisition evaluation's backward pass runs one node past the posterior instead of
about forty (botorch's helpers evaluate every branch of their ``where``s with autograd; issue 23).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erfcx, log_ndtr, ndtr
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["log_h", "log_Phi", "log_ei_within_bounds"]

_TAIL = -1.0
"""Below this ``u`` the naive ``log(phi(u) + u Phi(u))`` cancels; the tail formula takes over."""
_FAR = -1e6
"""Below this ``u`` (about minus the inverse square root of the precision) ``log(1 - exp(w))`` is its leading
term, ``-2 log(-u)``."""
_ASYMPTOTIC = -1e3
"""Below this ``u`` the slope is its asymptotic series ``-u - 2 / u`` (relative error ``6 / u^4``): there ``w``
nears zero and the closed form loses digits to cancellation."""
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_HALF_PI = 0.5 * math.log(0.5 * math.pi)


def _log_phi(x: np.ndarray) -> np.ndarray:
    return -0.5 * x * x - _LOG_SQRT_2PI


def _log_h(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log h(u) = log(phi(u) + u Phi(u))`` and its derivative ``Phi(u) / h(u)``, float64.

    Near (``u > -1``): the naive formula. In the tail, ``h(u) = phi(u) (1 - exp(w))`` and ``Phi(u) = phi(u)
    exp(w) / (-u)`` with ``w = log(-u Phi(u) / phi(u)) = log(-u) + log erfcx(-u / sqrt 2) + log sqrt(pi / 2)``
    (between about -0.42 and 0), so the slope is ``exp(w - log(-u) - log(1 - exp(w)))``; beyond `_ASYMPTOTIC`
    it is ``-u - 2 / u``. Far out, the value is its leading term ``log phi(u) - 2 log(-u)``."""
    value, slope = np.empty_like(u), np.empty_like(u)
    near = u > _TAIL
    x = u[near]
    Phi = ndtr(x)
    h = np.exp(_log_phi(x)) + x * Phi
    value[near], slope[near] = np.log(h), Phi / h
    tail = ~near
    if tail.any():
        x = u[tail]
        log_minus = np.log(-x)
        w = log_minus + np.log(erfcx(-x * math.sqrt(0.5))) + _HALF_LOG_HALF_PI
        log_one_minus = np.log(-np.expm1(w))
        value[tail] = _log_phi(x) + np.where(x > _FAR, log_one_minus, -2.0 * log_minus)
        slope[tail] = np.where(x > _ASYMPTOTIC, np.exp(w - log_minus - log_one_minus), -x - 2.0 / x)
    return value, slope


def _log_Phi(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log Phi(z)`` and its derivative ``phi(z) / Phi(z)``, float64."""
    value = log_ndtr(z)
    return value, np.exp(_log_phi(z) - value)


def _on_host(x: Tensor) -> np.ndarray:
    """``x``'s values as a float64 array on the host."""
    return x.detach().to("cpu", torch.float64).numpy()


def _like(values: np.ndarray, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Host ``values`` as a tensor of ``x``'s dtype and device, of ``shape``."""
    return torch.from_numpy(values).to(x).reshape(shape)


class _OnHost(torch.autograd.Function):
    """``f(x)`` elementwise from a host function returning the value and the slope."""

    @staticmethod
    def forward(ctx, x: Tensor, function) -> Tensor:
        value, slope = function(_on_host(x).reshape(-1))
        ctx.save_for_backward(_like(slope, x, x.shape))
        return _like(value, x, x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None


VARIANCE_FLOOR = 1e-12
"""Variances are clamped here before their square root, as botorch's analytic acquisitions do."""


def _within_bounds(mean: np.ndarray, variance: np.ndarray, best_f: float, objective: int,
                   upper: tuple[tuple[int, float], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`log_ei_within_bounds` on ``[N, m]`` arrays: the value ``[N]`` and its derivatives in the means and the
    variances ``[N, m]``. With ``s = sqrt(v)``, ``u = (best_f - mu) / s``: ``d/dmu = -h'(u) / s``, ``d/dv =
    (1 - u h'(u)) / 2v`` for the objective (``log s`` included), ``d/dmu = -Phi'(z) / s``, ``d/dv = -z Phi'(z) / 2v``
    for a bound; nothing through a clamped variance."""
    v = np.maximum(variance, VARIANCE_FLOOR)
    sigma = np.sqrt(v)
    free = variance >= VARIANCE_FLOOR
    d_mean, d_variance = np.zeros_like(mean), np.zeros_like(mean)
    k = objective
    u = (best_f - mean[:, k]) / sigma[:, k]
    value, slope = _log_h(u)
    value = value + 0.5 * np.log(v[:, k])
    d_mean[:, k] = -slope / sigma[:, k]
    d_variance[:, k] = np.where(free[:, k], (1.0 - u * slope) / (2.0 * v[:, k]), 0.0)
    for j, bound in upper:
        z = (bound - mean[:, j]) / sigma[:, j]
        log_p, slope = _log_Phi(z)
        value = value + log_p
        d_mean[:, j] -= slope / sigma[:, j]
        d_variance[:, j] -= np.where(free[:, j], z * slope / (2.0 * v[:, j]), 0.0)
    return value, d_mean, d_variance


class _WithinBounds(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean: Tensor, variance: Tensor, spec: tuple) -> Tensor:
        m = mean.shape[-1]
        value, d_mean, d_variance = _within_bounds(*(_on_host(t).reshape(-1, m) for t in (mean, variance)), *spec)
        ctx.save_for_backward(*(_like(d, mean, mean.shape) for d in (d_mean, d_variance)))
        return _like(value, mean, mean.shape[:-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        d_mean, d_variance = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        return g * d_mean, g * d_variance, None


def log_ei_within_bounds(mean: Tensor, variance: Tensor, best_f: float, objective: int,
                         upper: dict[int, float]) -> Tensor:
    """``log EI`` of output ``objective`` below ``best_f`` plus ``sum_j log P(output_j <= upper[j])``, for
    independent normal outputs of ``mean`` and ``variance`` ``[..., m]`` (variances clamped at `VARIANCE_FLOOR`):
    ``log_h(u) + log s + sum_j log_Phi(z_j)``, one autograd node in both arguments. ``[...]``."""
    return _WithinBounds.apply(mean, variance, (best_f, objective, tuple(upper.items())))


def log_h(u: Tensor) -> Tensor:
    """``log(phi(u) + u Phi(u))`` elementwise (float32 or float64), differentiable in ``u``."""
    return _OnHost.apply(u, _log_h)


def log_Phi(z: Tensor) -> Tensor:
    """``log Phi(z)`` elementwise, differentiable in ``z``."""
    return _OnHost.apply(z, _log_Phi)
