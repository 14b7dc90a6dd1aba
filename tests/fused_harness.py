"""Helpers of the fused backends' tests (``tests/compiler/test_fused.py``, ``test_triton.py``, ``test_cpu.py``).

``check_against_reference`` compares one fused backend with the ``reference`` oracle on
forward values and every gradient (hyperparameters, x1, x2), with repeated points and
repeated values in a column so that zero distances are covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from gpytorch import settings
from linear_operator import to_dense

from kerneldsl.compiler.backends import c_codegen, get_backend, triton_codegen
from harness import assert_close, random_hyperparameters, slot_gradients

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}

CANONICAL = {
    "single_term": ("matern52({e, b})", ["e", "b"]),
    "all_kinds": ("regime = matern52({e, b}) * rbf({w})\n"
                  "arch = matern12({a1}) + categorical({r1, r2}) + laplace({b, a1})\n"
                  "regime + arch + regime * (0.25 * matern32({b}) + 0.75 * arch)",
                  ["e", "b", "w", "a1", "r1", "r2"]),
    "fixed_weights": ("0.3 * rbf({x}) + 0.7 * matern12({y}) * categorical({z})", ["x", "y", "z"]),
}


@dataclass(frozen=True)
class Fused:
    """One generated backend under test: its name, code generator and golden-file suffix."""

    name: str
    generate: Callable
    suffix: str
    comment: str
    """How the generated source comments a term."""


FUSED = {"triton": Fused("triton", triton_codegen.generate, "py", "# term 0: matern52(e, b)"),
         "cpu": Fused("cpu", c_codegen.generate, "c", "/* term 0: matern52(e, b)")}


def make_pair(backend: Fused, ir, batch_shape, dtype, seed):
    """A fused kernel (triton: small tiles) in ``dtype`` and a float64 reference with the same hyperparameters."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # constants made at construction (fixed weights, priors) in float64
    try:
        fused = get_backend(backend.name)(ir, torch.Size(batch_shape)).to(dtype)
        reference = get_backend("reference")(ir, torch.Size(batch_shape)).to(torch.float64)
    finally:
        torch.set_default_dtype(default)
    if backend.name == "triton":
        from kerneldsl.compiler.backends.triton_kernel import BlockConfig

        fused.blocks = BlockConfig(block_m=8, block_n=4, block_diag=4, num_warps=1)
    fused.set_hyperparameters(random_hyperparameters(fused, torch.Generator().manual_seed(seed)))
    reference.set_hyperparameters(fused.get_hyperparameters())  # values as rounded to ``dtype``
    return fused, reference


def points(batch, n, d, seed, dtype):
    """Random points with a repeated row and a repeated value in column 0 (zero differences)."""
    x = torch.rand((*batch, n, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if n >= 4:
        x[..., 1, :] = x[..., 0, :]
        x[..., 2, 0] = x[..., 3, 0]
    return x.to(dtype)


def reference_symmetric(reference, x):
    """K(x, x) of the reference, one row at a time.

    gpytorch's own x1-equals-x2 path squares distances by quadratic expansion, which
    is off by ~1e-8 at zero distance for matern12 (sqrt of rounding noise); a row
    against the whole set takes its exact ``cdist`` path instead, so identical points
    (and their gradients) can be compared at full precision.
    """
    rows = [to_dense(reference(x[..., i:i + 1, :], x)) for i in range(x.size(-2))]
    return torch.cat(rows, dim=-2)


def check_against_reference(backend: Fused, ir, mode, dtype, batch_shape, seed, n=10, m=6, device="cpu"):
    """Forward and every gradient (raw hyperparameters, x1, x2) of the fused backend on ``device`` vs reference."""
    tol = TOLERANCE[dtype]
    tk, ref = make_pair(backend, ir, batch_shape, dtype, seed)
    if device != "cpu":
        from kerneldsl.compiler.backends.triton_kernel import BlockConfig

        tk.to(device).blocks = BlockConfig()  # the default tiles of compiled kernels
    d = len(ir.features)
    x1 = points(batch_shape, n, d, seed + 1, dtype)
    x2 = points(batch_shape, n if mode == "diag" else m, d, seed + 2, dtype)
    x2[..., 0, :] = x1[..., 0, :]  # a zero distance in the full and diag cases too
    t1, r1 = x1.to(device).requires_grad_(), x1.double().requires_grad_()
    t2, r2 = x2.to(device).requires_grad_(), x2.double().requires_grad_()
    with settings.lazily_evaluate_kernels(False):
        if mode == "symmetric":
            out, expected = tk(t1, t1).to_dense(), reference_symmetric(ref, r1)
            t_inputs, r_inputs = [t1], [r1]
        elif mode == "diag":
            out, expected = tk(t1, t2, diag=True), ref(r1, r2, diag=True)
            t_inputs, r_inputs = [t1, t2], [r1, r2]
        else:
            out, expected = tk(t1, t2).to_dense(), ref(r1, r2).to_dense()
            t_inputs, r_inputs = [t1, t2], [r1, r2]
    assert out.dtype == dtype and out.device.type == torch.device(device).type
    assert_close(out.double().cpu(), expected, TOLERANCE[dtype], f"{mode} forward")
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t_loss, r_loss = (out * weights.to(out)).sum(), (expected * weights).sum()
    t_grads = torch.autograd.grad(t_loss, t_inputs, retain_graph=True)
    r_grads = torch.autograd.grad(r_loss, r_inputs, retain_graph=True)
    for i, (t, r) in enumerate(zip(t_grads, r_grads)):
        assert_close(t.double().cpu(), r, tol, f"{mode} gradient w.r.t. x{i + 1}")
    assert_close(slot_gradients(tk, t_loss).double().cpu(), slot_gradients(ref, r_loss), tol,
                 f"{mode} gradient w.r.t. the hyperparameters")


