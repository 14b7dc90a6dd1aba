"""The two functions of a normal variable that the closed-form acquisitions need, each one autograd node.

* `log_h`: ``log(phi(u) + u Phi(u))``, the log of expected improvement in units of the posterior standard
  deviation (``u = (best - mean) / sd`` when minimising), accurate far into the tail (Ament et al. 2023,
  "Unexpected improvements to expected improvement", the formulation of botorch's ``LogExpectedImprovement``);
* `log_Phi`: ``log Phi(z)``, the log probability that a normal output is below a bound ``z`` standard
  deviations above its mean.

Both carry their derivatives in closed form: ``d log_h / du = Phi(u) / h(u)`` (since ``h'(u) = Phi(u)``) and
``d log_Phi / dz = phi(z) / Phi(z)``. The values and slopes are computed in float64 by scipy's special
functions (``log_ndtr``, ``erfcx``) on the host, where a few values cost a microsecond per function instead
of a few per torch operation: an acquisition evaluation then adds two nodes to the backward pass instead of
about forty (botorch's helpers evaluate every branch of their ``where``s with autograd), and the forward
pass no torch operation (issue 23).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erfcx, log_ndtr, ndtr
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["log_h", "log_Phi"]

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


class _OnHost(torch.autograd.Function):
    """``f(x)`` elementwise from a host function returning the value and the slope."""

    @staticmethod
    def forward(ctx, x: Tensor, function) -> Tensor:
        host = x.detach().to("cpu", torch.float64).reshape(-1).numpy()
        value, slope = function(host)
        ctx.save_for_backward(torch.from_numpy(slope).to(x).reshape(x.shape))
        return torch.from_numpy(value).to(x).reshape(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None


def log_h(u: Tensor) -> Tensor:
    """``log(phi(u) + u Phi(u))`` elementwise (float32 or float64), differentiable in ``u``."""
    return _OnHost.apply(u, _log_h)


def log_Phi(z: Tensor) -> Tensor:
    """``log Phi(z)`` elementwise, differentiable in ``z``."""
    return _OnHost.apply(z, _log_Phi)
