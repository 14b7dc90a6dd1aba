"""Cross-backend test harness: the same kernel through several backends, values and gradients compared.

Plug in a ``KernelIR`` (kernels are built with ``build_kernels``) or an already
compiled mapping ``{backend name: kernel}``; the first kernel is the oracle
(normally ``reference``).

The reference is plain gpytorch, which computes distances by the quadratic
expansion ``|a|^2 + |b|^2 - 2ab``: at zero distance (a pair of identical points)
its error is about sqrt(eps) for matern12 (whose value has a kink there). Such
pairs are compared at ``ZERO_DISTANCE_RTOL`` and left out of gradient comparisons;
the compiled backends' own behaviour there is checked with gradcheck instead.
"""

from __future__ import annotations

from typing import Mapping

import gpytorch
import torch

from kerneldsl.compiler.backends import get_backend
from kerneldsl.compiler.ir import KernelIR
from kerneldsl.compiler.options import KernelOptions

ZERO_DISTANCE_RTOL = 1e-7


def build_kernels(ir: KernelIR, batch_shape=torch.Size([]), options: KernelOptions | None = None,
                  backends=("reference", "torch"), dtype=torch.float64, device="cpu") -> dict:
    """``{backend: kernel}`` for ``ir``, all in ``dtype`` on ``device``."""
    return {name: get_backend(name)(ir, torch.Size(batch_shape), options).to(device=device, dtype=dtype)
            for name in backends}


def random_hyperparameters(kernel, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random values for every readable hyperparameter of ``kernel`` (one per batch element).

    Lengthscales in [0.2, 2], output scale in [0.5, 2], each sum's weights on its simplex.
    """
    current = kernel.get_hyperparameters()
    values = {}
    for name, value in current.items():
        low, high = (0.5, 2.0) if name == "outputscale" else (0.2, 2.0)
        values[name] = low + (high - low) * torch.rand(value.shape, generator=generator, dtype=torch.float64)
    for name in kernel.ir.weight_names:
        values[name] = 0.05 + torch.rand(current[name].shape, generator=generator, dtype=torch.float64)
    return values


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max-norm relative error ``max|a - e| / max|e|``."""
    actual, expected = actual.detach(), expected.detach()
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return float((actual - expected).abs().max() / scale)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = relative_error(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:.3g}"


def evaluate(kernel, x1: torch.Tensor, x2: torch.Tensor | None = None, diag: bool = False) -> torch.Tensor:
    """The dense kernel matrix (or diagonal) through gpytorch's public ``__call__``."""
    out = kernel(x1, x2, diag=diag)
    return out if diag else out.to_dense()


def zero_distance_pairs(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Mask ``[*, n, m]`` of pairs of identical points."""
    return (x1.unsqueeze(-2) == x2.unsqueeze(-3)).all(-1)


def slot_gradients(kernel, loss: torch.Tensor) -> torch.Tensor:
    """d loss / d raw parameters, laid out like ``cat(outputscale[..., None], lengthscale, weight_logits)``.

    Works on any backend: every raw parameter element drives exactly one element of
    the flat constrained vectors through the same elementwise transform on every
    backend, so raw gradients placed in flat layout are comparable across backends.
    """
    params = [p for p in kernel.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    outputscale, lengthscale, logits = kernel._flat_values()
    flat = torch.cat([outputscale.unsqueeze(-1), lengthscale, logits], dim=-1)
    position = torch.arange(flat.numel(), dtype=flat.dtype, device=flat.device).view_as(flat)
    derivative = torch.autograd.grad(flat, params, torch.ones_like(flat), retain_graph=True, allow_unused=True)
    weighted = torch.autograd.grad(flat, params, position, allow_unused=True)
    out = torch.full((flat.numel(),), float("nan"), dtype=flat.dtype, device=flat.device)
    for g, d, w in zip(grads, derivative, weighted):
        if d is None:
            continue
        index = (w / d).round().long().reshape(-1)
        out[index] = (torch.zeros_like(d) if g is None else g).reshape(-1)
    return out.view_as(flat)


def assert_backends_agree(ir_or_kernels: KernelIR | Mapping[str, object], x1: torch.Tensor,
                          x2: torch.Tensor | None = None, *, batch_shape=torch.Size([]),
                          options: KernelOptions | None = None, seed: int = 0, rtol: float = 1e-10,
                          gradients: bool = True) -> None:
    """Every backend matches the first on values (full, symmetric, diag) and gradients.

    Checks: identical readable hyperparameter names; after setting the same random
    hyperparameters, K(x1, x2), K(x1) and its diag; gradients of a random linear
    functional of K w.r.t. x1, x2 and all hyperparameters (slot layout).
    """
    kernels = (dict(ir_or_kernels) if not isinstance(ir_or_kernels, KernelIR)
               else build_kernels(ir_or_kernels, batch_shape, options, dtype=x1.dtype, device=x1.device))
    (ref_name, ref), *others = kernels.items()
    names = list(ref.get_hyperparameters())
    generator = torch.Generator().manual_seed(seed)
    values = random_hyperparameters(ref, generator)
    for name, kernel in kernels.items():
        assert list(kernel.get_hyperparameters()) == names, f"{name}: hyperparameter names differ from {ref_name}"
        kernel.set_hyperparameters(values)
    expected_values = ref.get_hyperparameters()
    for name, kernel in others:
        for key, value in kernel.get_hyperparameters().items():
            assert_close(value, expected_values[key], 1e-12, f"{name}: hyperparameter {key}")

    x2 = x1 if x2 is None else x2
    cases = {"K(x1, x2)": (x1, x2), "K(x1, x1)": (x1, x1)}
    with torch.no_grad():
        for label, (a, b) in cases.items():
            expected = evaluate(ref, a, b)
            same = zero_distance_pairs(a, b).expand_as(expected)
            for name, kernel in others:
                actual = evaluate(kernel, a, b)
                assert_close(actual.masked_fill(same, 0), expected.masked_fill(same, 0), rtol, f"{name}: {label}")
                assert_close(actual, expected, ZERO_DISTANCE_RTOL, f"{name}: {label} at identical points")
        n = min(x1.shape[-2], x2.shape[-2])
        diag_args = (x1[..., :n, :], x2[..., :n, :])
        expected = evaluate(ref, *diag_args, diag=True)
        for name, kernel in others:
            assert_close(evaluate(kernel, *diag_args, diag=True), expected, rtol, f"{name}: diag")
            assert_close(evaluate(kernel, x1, diag=True), evaluate(ref, x1, diag=True), rtol, f"{name}: diag K(x1)")

    if gradients:
        _assert_gradients_agree(kernels, x1, x2, rtol)


def _assert_gradients_agree(kernels: Mapping[str, object], x1: torch.Tensor, x2: torch.Tensor, rtol: float) -> None:
    (ref_name, _), *_ = kernels.items()
    results = {}
    for symmetric in (False, True):
        for name, kernel in kernels.items():
            a = x1.detach().clone().requires_grad_(True)
            b = a if symmetric else x2.detach().clone().requires_grad_(True)
            with gpytorch.settings.lazily_evaluate_kernels(False):
                matrix = evaluate(kernel, a, b)
            weights = torch.randn(matrix.shape, generator=torch.Generator().manual_seed(1), dtype=matrix.dtype)
            weights = weights.to(matrix.device).masked_fill(zero_distance_pairs(a, b).expand_as(matrix), 0)
            n = min(a.shape[-2], b.shape[-2])
            diag = evaluate(kernel, a[..., :n, :], b[..., :n, :], diag=True)
            loss = (matrix * weights).sum() + 0.5 * diag.sum()
            inputs = (a,) if symmetric else (a, b)
            grads = torch.autograd.grad(loss, inputs, retain_graph=True)
            results[symmetric, name] = (*grads, slot_gradients(kernel, loss))
    for (symmetric, name), grads in results.items():
        expected = results[symmetric, ref_name]
        labels = ("x1",) if symmetric else ("x1", "x2")
        for label, actual, exp in zip(labels + ("hyperparameters",), grads, expected):
            assert_close(actual, exp, rtol, f"{name}: gradient w.r.t. {label} ({'x1 is x2' if symmetric else 'x1, x2'})")
