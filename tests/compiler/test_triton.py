"""The ``triton`` backend under Triton's CPU interpreter: values and gradients equal ``reference``.

Every test here runs with ``TRITON_INTERPRET=1`` (set by an autouse fixture for this
module only; ``triton.jit`` reads it when a generated module is imported and the
backend checks it at launch), on CPU tensors at small sizes with small tiles so
that every path runs: several row/column blocks, partial tiles, the mirrored tiles
of ``x1 is x2`` and the diag path.

Golden files: ``tests/compiler/golden/triton_*.py`` hold the generated source of a few
canonical kernels. After an intended change of the code generator, regenerate
them with ``KERNELDSL_UPDATE_GOLDEN=1 python -m pytest tests/compiler/test_triton.py -k golden``
and review the diff.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from gpytorch import settings
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from linear_operator import to_dense

pytest.importorskip("triton")

import kerneldsl as kd  # noqa: E402
from kerneldsl.compiler.backends import get_backend  # noqa: E402
from kerneldsl.compiler.backends.triton_codegen import generate  # noqa: E402
from kerneldsl.compiler.backends.triton_kernel import BlockConfig  # noqa: E402
from kerneldsl.compiler.kinds import KIND_NAMES  # noqa: E402
from harness import assert_close, random_hyperparameters, slot_gradients  # noqa: E402
from ir_strategies import kernel_irs  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
SMALL_TILES = BlockConfig(block_m=8, block_n=4, block_diag=4, num_warps=1)
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}

CANONICAL = {
    "single_term": ("matern52({e, b})", ["e", "b"]),
    "all_kinds": ("regime = matern52({e, b}) * rbf({w})\n"
                  "arch = matern12({a1}) + categorical({r1, r2}) + laplace({b, a1})\n"
                  "regime + arch + regime * (0.25 * matern32({b}) + 0.75 * arch)",
                  ["e", "b", "w", "a1", "r1", "r2"]),
    "fixed_weights": ("0.3 * rbf({x}) + 0.7 * matern12({y}) * categorical({z})", ["x", "y", "z"]),
}


@pytest.fixture(autouse=True, scope="module")
def triton_interpreter():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


# --- helpers -------------------------------------------------------------------------

def make_pair(ir, batch_shape, dtype, seed):
    """A triton kernel (small tiles) in ``dtype`` and a float64 reference with the same hyperparameters."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # constants made at construction (fixed weights, priors) in float64
    try:
        triton_kernel = get_backend("triton")(ir, torch.Size(batch_shape)).to(dtype)
        reference = get_backend("reference")(ir, torch.Size(batch_shape)).to(torch.float64)
    finally:
        torch.set_default_dtype(default)
    triton_kernel.blocks = SMALL_TILES
    triton_kernel.set_hyperparameters(random_hyperparameters(triton_kernel, torch.Generator().manual_seed(seed)))
    reference.set_hyperparameters(triton_kernel.get_hyperparameters())  # values as rounded to ``dtype``
    return triton_kernel, reference


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


def check_against_reference(ir, mode, dtype, batch_shape, seed, n=10, m=6, device="cpu"):
    """Forward and every gradient (raw hyperparameters, x1, x2) of triton on ``device`` vs reference."""
    tol = TOLERANCE[dtype]
    tk, ref = make_pair(ir, batch_shape, dtype, seed)
    if device != "cpu":
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


# --- random programs against the reference ----------------------------------------------

CASES = [
    ("full", torch.float64, ()),
    ("symmetric", torch.float64, (2,)),
    ("diag", torch.float64, (2,)),
    ("full", torch.float32, (2,)),
    ("symmetric", torch.float32, ()),
    ("diag", torch.float32, ()),
]


@pytest.mark.parametrize("mode,dtype,batch_shape", CASES)
@hsettings(max_examples=4, deadline=None, derandomize=True, database=None,
           phases=[Phase.explicit, Phase.generate],  # shrinking under the interpreter takes minutes
           suppress_health_check=[HealthCheck.too_slow])
@given(ir=kernel_irs(max_features=4, max_terms=4, max_composites=3))
def test_random_programs_match_reference(ir, mode, dtype, batch_shape):
    check_against_reference(ir, mode, dtype, batch_shape, seed=len(ir.terms))


def test_all_kinds_program_has_every_kind_of_the_registry():
    """A new kind must join the ``all_kinds`` program (and its golden file): it is how every kind is tested."""
    assert {t.kind for t in kd.compile_ir(*CANONICAL["all_kinds"]).terms} == set(KIND_NAMES)


@pytest.mark.parametrize("mode", ["full", "symmetric", "diag"])
def test_all_kinds_match_reference_batched(mode):
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    check_against_reference(ir, mode, torch.float64, (3,), seed=7, n=11, m=9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled Triton kernels need a CUDA device")
@pytest.mark.parametrize("mode", ["full", "symmetric", "diag"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_kernels_on_cuda_match_reference(mode, dtype, monkeypatch):
    """The same checks with real compiled kernels (default tiles, several of them at n=70)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    check_against_reference(ir, mode, dtype, (3,), seed=8, n=70, m=45, device="cuda")


# --- batch shapes, strides, determinism --------------------------------------------------

def test_acquisition_shape_and_strided_inputs():
    """Kernel batch [] against x1 [4, 2, d] and an expanded, non-contiguous x2 [4, m, d]."""
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    tk, ref = make_pair(ir, (), torch.float64, seed=3)
    d = len(ir.features)
    x1 = points((4,), 2, d, 11, torch.float64)
    base = points((), 2 * 9, d + 1, 12, torch.float64)[::2, 1:]  # strided rows and columns
    x2 = base.expand(4, 9, d)
    assert not x2.is_contiguous() and x2.stride(0) == 0
    with settings.lazily_evaluate_kernels(False):
        out = tk(x1, x2).to_dense()
        expected = ref(x1, x2).to_dense()
    assert out.shape == (4, 2, 9)
    assert_close(out, expected, 1e-9, "acquisition-shape forward")


def test_kernel_batch_broadcasts_against_input_batch():
    """Kernel batch [2, 1] with inputs [3, n, d]: output batch [2, 3], gpytorch-style."""
    ir = kd.compile_ir(*CANONICAL["fixed_weights"])
    tk, ref = make_pair(ir, (2, 1), torch.float64, seed=5)
    x = points((3,), 5, 3, 13, torch.float64)
    with settings.lazily_evaluate_kernels(False):
        out = tk(x, x).to_dense()
        expected = reference_symmetric(ref, x)
    assert out.shape == expected.shape == (2, 3, 5, 5)
    assert_close(out, expected, 1e-9, "broadcast batch forward")


def test_backward_is_deterministic():
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    tk, _ = make_pair(ir, (2,), torch.float64, seed=9)
    x = points((2,), 11, len(ir.features), 14, torch.float64)
    y = points((2,), 5, len(ir.features), 15, torch.float64)
    results = []
    for _ in range(2):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        with settings.lazily_evaluate_kernels(False):
            loss = sum((k * torch.linspace(-1, 1, k.numel(), dtype=k.dtype).reshape(k.shape)).sum()
                       for k in (tk(xs, xs).to_dense(), tk(xs, ys).to_dense(), tk(xs, xs, diag=True)))
        grads = torch.autograd.grad(loss, [xs, ys, tk.raw_outputscale, tk.raw_lengthscale, tk.weight_logits])
        results.append(torch.cat([g.flatten() for g in grads]))
    assert torch.equal(results[0], results[1])


def test_zero_distance_gradients_are_finite_and_zero():
    """At x1 == x2 every kind's gradient is zero (matern12, categorical, laplace: the 0 subgradient)."""
    ir = kd.compile_ir(" + ".join(f"{kind}({{a, b}})" for kind in KIND_NAMES), ["a", "b"])
    tk, _ = make_pair(ir, (), torch.float64, seed=1)
    x = torch.tensor([[0.3, 1.0]], dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    with settings.lazily_evaluate_kernels(False):
        k = tk(x, y).to_dense()
    k.sum().backward()
    assert torch.allclose(k, tk.outputscale.detach())
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(y.grad, torch.zeros_like(y))
    assert torch.equal(tk.raw_lengthscale.grad, torch.zeros_like(tk.raw_lengthscale))


def test_exact_mll_and_its_gradient_match_reference():
    """Through botorch's SingleTaskGP: the training path (lazy kernel tensor, x1 is x2) and posterior.

    No matern12 here: gpytorch's own K(X, X) is off by ~1e-8 at zero distance for it.
    """
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    ir = kd.compile_ir("matern52({e, b}) * rbf({w}) + categorical({r1, r2}) * matern32({a1})",
                       ["e", "b", "w", "a1", "r1", "r2"])
    tk, ref = make_pair(ir, (), torch.float64, seed=4)
    X = points((), 12, len(ir.features), 16, torch.float64)[2:]
    Y = torch.sin(4 * X.sum(-1, keepdim=True))
    losses, grads = [], []
    for kernel in (tk, ref):
        model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=None)
        model.likelihood.noise = 0.1  # well conditioned: the comparison measures the kernels, not the solve
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        model.train()
        loss = -mll(model(X), model.train_targets)
        losses.append(loss.detach())
        grads.append(slot_gradients(kernel, loss))
        model.eval()
        with torch.no_grad():
            losses.append(model.posterior(X[:3] + 0.01).variance.squeeze(-1))
    assert_close(losses[0], losses[2], 1e-9, "marginal log likelihood")
    assert_close(losses[1], losses[3], 1e-9, "posterior variance")
    assert_close(grads[0], grads[1], 1e-9, "gradient of the marginal log likelihood")


# --- generated source, errors -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_generated_source_matches_golden(name):
    source = generate(kd.compile_ir(*CANONICAL[name])).source
    path = GOLDEN / f"triton_{name}.py"
    if os.environ.get("KERNELDSL_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(source)
    assert path.exists(), f"missing golden file {path}; run with KERNELDSL_UPDATE_GOLDEN=1"
    assert source == path.read_text(), f"generated source changed; see the module docstring to regenerate {path}"


def test_generated_source_names_the_terms():
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    source = generate(ir).source
    assert "# term 0: matern52(e, b)" in source
    assert "# feature 5: r2" in source
    compile(source, "generated", "exec")  # valid Python


def test_cpu_tensors_without_interpreter_are_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    kernel = kd.compile(*CANONICAL["single_term"], backend="triton")
    with pytest.raises(kd.KernelError, match="TRITON_INTERPRET=1"):
        kernel(torch.rand(3, 2), torch.rand(4, 2)).to_dense()


def test_missing_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(kd.KernelError, match="triton cannot be imported"):
        kd.compile(*CANONICAL["single_term"], backend="triton")
