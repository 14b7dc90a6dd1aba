"""The fused backends (``triton`` under its CPU interpreter, ``cpu``): values and gradients equal ``reference``.

One harness for both generated backends (in the spirit of gpytorch's KeOps tests): every
test takes the ``backend`` fixture. ``triton`` runs with ``TRITON_INTERPRET=1`` (set for
its tests only; ``triton.jit`` reads it when a generated module is imported and the
backend checks it at launch) with small tiles, so that several row/column blocks,
partial tiles and the mirrored tiles of ``x1 is x2`` run; ``cpu`` compiles its C
kernels with the system's compiler. Small sizes, CPU tensors.

Golden files: ``tests/compiler/golden/<backend>_*.py|c`` hold the generated source of a few
canonical kernels. After an intended change of a code generator, regenerate them with
``KERNELDSL_UPDATE_GOLDEN=1 python -m pytest tests/compiler/test_fused.py -k golden``
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from gpytorch import settings
from hypothesis import HealthCheck, Phase, given, settings as hsettings

import kerneldsl as kd
from kerneldsl.compiler.backends.c_kernel import compiler_unavailable_reason
from kerneldsl.compiler.kinds import KIND_NAMES
from fused_harness import CANONICAL, FUSED, Fused, check_against_reference, make_pair, points, reference_symmetric
from harness import slot_gradients, assert_close
from ir_strategies import kernel_irs

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module", params=sorted(FUSED))
def backend(request) -> Fused:
    """Each fused backend in turn: triton in its interpreter (skipped without triton), cpu (without a compiler)."""
    if request.param == "triton":
        pytest.importorskip("triton")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TRITON_INTERPRET", "1")
            yield FUSED["triton"]
        return
    reason = compiler_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    yield FUSED["cpu"]


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
def test_random_programs_match_reference(backend, ir, mode, dtype, batch_shape):
    check_against_reference(backend, ir, mode, dtype, batch_shape, seed=len(ir.terms))


def test_all_kinds_program_has_every_kind_of_the_registry():
    """A new kind must join the ``all_kinds`` program (and its golden file): it is how every kind is tested."""
    assert {t.kind for t in kd.compile_ir(*CANONICAL["all_kinds"]).terms} == set(KIND_NAMES)


@pytest.mark.parametrize("mode", ["full", "symmetric", "diag"])
def test_all_kinds_match_reference_batched(backend, mode):
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    check_against_reference(backend, ir, mode, torch.float64, (3,), seed=7, n=11, m=9)


# --- batch shapes, strides, determinism --------------------------------------------------

def test_acquisition_shape_and_strided_inputs(backend):
    """Kernel batch [] against x1 [4, 2, d] and an expanded, non-contiguous x2 [4, m, d]."""
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    tk, ref = make_pair(backend, ir, (), torch.float64, seed=3)
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


def test_kernel_batch_broadcasts_against_input_batch(backend):
    """Kernel batch [2, 1] with inputs [3, n, d]: output batch [2, 3], gpytorch-style."""
    ir = kd.compile_ir(*CANONICAL["fixed_weights"])
    tk, ref = make_pair(backend, ir, (2, 1), torch.float64, seed=5)
    x = points((3,), 5, 3, 13, torch.float64)
    with settings.lazily_evaluate_kernels(False):
        out = tk(x, x).to_dense()
        expected = reference_symmetric(ref, x)
    assert out.shape == expected.shape == (2, 3, 5, 5)
    assert_close(out, expected, 1e-9, "broadcast batch forward")


def test_backward_is_deterministic(backend):
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    tk, _ = make_pair(backend, ir, (2,), torch.float64, seed=9)
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


def test_zero_distance_gradients_are_finite_and_zero(backend):
    """At x1 == x2 every kind's gradient is zero (matern12, categorical, laplace: the 0 subgradient)."""
    ir = kd.compile_ir(" + ".join(f"{kind}({{a, b}})" for kind in KIND_NAMES), ["a", "b"])
    tk, _ = make_pair(backend, ir, (), torch.float64, seed=1)
    x = torch.tensor([[0.3, 1.0]], dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    with settings.lazily_evaluate_kernels(False):
        k = tk(x, y).to_dense()
    k.sum().backward()
    assert torch.allclose(k, tk.outputscale.detach())
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(y.grad, torch.zeros_like(y))
    assert torch.equal(tk.raw_lengthscale.grad, torch.zeros_like(tk.raw_lengthscale))


def test_exact_mll_and_its_gradient_match_reference(backend):
    """Through botorch's SingleTaskGP: the training path (lazy kernel tensor, x1 is x2) and posterior.

    No matern12 here: gpytorch's own K(X, X) is off by ~1e-8 at zero distance for it.
    """
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    ir = kd.compile_ir("matern52({e, b}) * rbf({w}) + categorical({r1, r2}) * matern32({a1})",
                       ["e", "b", "w", "a1", "r1", "r2"])
    tk, ref = make_pair(backend, ir, (), torch.float64, seed=4)
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


# --- generated source ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_generated_source_matches_golden(backend, name):
    source = backend.generate(kd.compile_ir(*CANONICAL[name])).source
    path = GOLDEN / f"{backend.name}_{name}.{backend.suffix}"
    if os.environ.get("KERNELDSL_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(source)
    assert path.exists(), f"missing golden file {path}; run with KERNELDSL_UPDATE_GOLDEN=1"
    assert source == path.read_text(), f"generated source changed; see the module docstring to regenerate {path}"


def test_generated_source_names_the_terms_and_features(backend):
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    source = backend.generate(ir).source
    assert backend.comment in source
    assert "r2" in source and "regime" in source
