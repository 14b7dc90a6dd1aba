"""What only the ``cpu`` backend has: a C compiler behind it, an on-disk cache, OpenMP threads,
and the ``auto`` backend's choice of it. Values and gradients against ``reference``: ``test_fused.py``."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import kerneldsl as kd
from kerneldsl.compiler.backends import auto, c_kernel
from kerneldsl.compiler.backends.c_codegen import generate
from kerneldsl.compiler.backends.c_kernel import CpuKernels, compiler_unavailable_reason
from kerneldsl.compiler.backends.fused import FusedKernelFunction
from kerneldsl.compiler.backends.torch_kernel import stack_frozen
from fused_harness import CANONICAL, points
from harness import assert_close

pytestmark = pytest.mark.skipif(compiler_unavailable_reason() is not None,
                                reason=str(compiler_unavailable_reason()))


def _kernel(name: str = "all_kinds", backend: str = "cpu", **options):
    kernel = kd.compile(*CANONICAL[name], backend=backend, **options).double()
    kernel.set_hyperparameters({"outputscale": torch.tensor(1.7, dtype=torch.float64)})
    return kernel


def test_fresh_kernels_compile_into_the_cache_and_load_from_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_DIR", str(tmp_path))
    ir = kd.compile_ir(*CANONICAL["single_term"])
    CpuKernels(ir, generate(ir), "first").library(torch.float64)
    libraries = list((tmp_path / "cpu").glob("kd_*.so"))
    assert len(libraries) == 1 and not list((tmp_path / "cpu").glob(".build-*"))

    def no_compiler(*args):
        raise AssertionError("compiled again although the library is cached")

    monkeypatch.setattr(c_kernel, "_compile", no_compiler)
    CpuKernels(ir, generate(ir), "second").library(torch.float64)  # another process would do the same


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    ir = kd.compile_ir(*CANONICAL["single_term"])
    with pytest.raises(kd.KernelError, match="no C compiler 'no-such-compiler-here'") as err:
        CpuKernels(ir, generate(ir), "x").library(torch.float64)
    assert "backend='torch'" in err.value.hint


def test_a_failing_compiler_is_reported_with_its_command(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # runs, fails, says nothing
    ir = kd.compile_ir(*CANONICAL["single_term"])
    with pytest.raises(kd.KernelError, match="could not compile its generated C source") as err:
        CpuKernels(ir, generate(ir), "x").library(torch.float64)
    assert "false -std=c11" in str(err.value)


def test_tensors_off_the_cpu_are_a_clear_error():
    kernel = _kernel("single_term")
    x = torch.rand(3, 2, dtype=torch.float64)
    with pytest.raises(kd.KernelError, match="runs on CPU tensors"):
        kernel.forward(x.to("meta"), x.to("meta"))


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_give_the_same_values_and_gradients(threads):
    """Rows are spread over OpenMP threads with a static schedule: deterministic for a thread count, and the
    same up to rounding across thread counts."""
    kernel = _kernel()
    x = points((2,), 37, len(kernel.ir.features), 3, torch.float64)
    y = points((2,), 19, len(kernel.ir.features), 4, torch.float64)
    results = {}
    before = torch.get_num_threads()
    try:
        for count in (1, threads, threads):
            torch.set_num_threads(count)
            kernel.zero_grad()
            xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
            loss = sum((k * torch.linspace(-1, 1, k.numel(), dtype=k.dtype).reshape(k.shape)).sum()
                       for k in (kernel(xs, xs).to_dense(), kernel(xs, ys).to_dense(), kernel(xs, xs, diag=True)))
            loss.backward()
            grads = [xs.grad, ys.grad, kernel.raw_lengthscale.grad, kernel.weight_logits.grad, kernel.raw_outputscale.grad]
            results.setdefault(count, []).append(torch.cat([g.flatten() for g in grads]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[threads][0], results[threads][-1])
    assert_close(results[threads][0], results[1][0], 1e-12, f"{threads} threads against 1")


def test_gradcheck_of_the_fused_function():
    """Finite differences through x1, x2, lengthscales, weights and output scale: full, x1 is x2, diag."""
    kernel = _kernel()
    d = len(kernel.ir.features)
    x = points((), 6, d, 5, torch.float64)
    x[1] = x[0] + 0.05  # no exact ties: finite differences need a smooth neighbourhood
    y = points((), 4, d, 6, torch.float64) + 0.01
    ls = kernel.lengthscale.detach()[None].clone()
    w = kernel.sum_weights().detach()[None].clone()
    s = kernel.outputscale.detach().reshape(1).clone()

    def evaluate(a, b, ls, w, s):
        run = lambda diag, first, second: FusedKernelFunction.apply(kernel.kernels, None, diag, first, second,
                                                                   ls, w, s)
        return run(False, a[None], b[None]), run(False, a[None], None), run(True, a[None, :4], b[None])

    inputs = tuple(t.requires_grad_() for t in (x, y, ls, w, s))
    assert torch.autograd.gradcheck(evaluate, inputs, eps=1e-6, atol=1e-7)


def test_copies_and_pickles_share_the_compiled_kernels():
    kernel = _kernel("fixed_weights")
    x = torch.rand(5, 3, dtype=torch.float64)
    expected = kernel(x).to_dense()
    for clone in (copy.deepcopy(kernel), pickle.loads(pickle.dumps(kernel))):
        assert clone.kernels is kernel.kernels
        assert torch.equal(clone(x).to_dense(), expected)


def test_auto_runs_the_fused_cpu_path_from_its_threshold(monkeypatch):
    monkeypatch.setattr(auto, "FUSED_CPU_THRESHOLD", 100)
    kernel, plain = _kernel(backend="auto"), _kernel(backend="torch")
    plain.set_hyperparameters(kernel.get_hyperparameters())
    d = len(kernel.ir.features)
    for n, path in ((9, "torch"), (10, "cpu")):
        x = points((), n, d, n, torch.float64)
        assert_close(kernel(x).to_dense(), plain(x).to_dense(), 1e-12, f"auto at n = {n}")
        assert kernel.last_path == path
    assert kernel(x, diag=True).shape == (10,) and kernel.last_path == "torch"  # 10 entries


def test_fused_threshold_zero_runs_the_fused_path_at_every_size():
    """``fused_threshold=0`` (what a study's kernels use): even a 3 x 3 K runs the C kernels; read at every call."""
    kernel, plain = _kernel(backend="auto", fused_threshold=0), _kernel(backend="torch")
    plain.set_hyperparameters(kernel.get_hyperparameters())
    x = points((), 3, len(kernel.ir.features), 3, torch.float64)
    assert_close(kernel(x).to_dense(), plain(x).to_dense(), 1e-12, "auto at n = 3, fused_threshold=0")
    assert kernel.last_path == "cpu"
    kernel.options.fused_threshold = "auto"
    kernel(x).to_dense()
    assert kernel.last_path == "torch"


def test_a_frozen_kernel_on_the_fused_path_matches_the_torch_path_and_keeps_its_hyperparameters():
    """Values and input gradients of a frozen fused kernel (hyperparameters prepared once) equal the torch path's,
    batched; changing the kernel afterwards does not change the frozen one."""
    kernel, plain = _kernel(backend="auto", fused_threshold=0), _kernel(backend="torch")
    plain.set_hyperparameters(kernel.get_hyperparameters())
    d = len(kernel.ir.features)
    frozen = kernel.frozen()
    x1 = points((2,), 3, d, 1, torch.float64).requires_grad_(True)
    x2 = points((2,), 5, d, 2, torch.float64)
    value = frozen(x1, x2)
    assert kernel.last_path == "cpu"
    (gradient,) = torch.autograd.grad(value.square().sum(), x1)
    x1_ = x1.detach().clone().requires_grad_(True)
    expected = plain.forward(x1_, x2)
    (expected_gradient,) = torch.autograd.grad(expected.square().sum(), x1_)
    assert_close(value, expected, 1e-12, "frozen fused values")
    assert_close(gradient, expected_gradient, 1e-10, "frozen fused input gradients")
    kernel.set_hyperparameters({"outputscale": torch.tensor(3.0, dtype=torch.float64)})
    assert_close(frozen(x1, x2), expected, 1e-12, "a frozen kernel keeps the hyperparameters it was frozen with")


@pytest.mark.parametrize("fused_threshold", [0, "auto"])
def test_stacked_frozen_kernels_equal_each_frozen_kernel(fused_threshold):
    """`stack_frozen`: kernels of one IR with different hyperparameters, evaluated together (one fused call with the
    hyperparameter sets as its batch, or, off the fused path, the separate calls stacked): each slice is that
    kernel's values and input gradients; kernels of different IRs do not stack."""
    kernels = [_kernel(backend="auto", fused_threshold=fused_threshold) for _ in range(3)]
    for i, kernel in enumerate(kernels):
        hyperparameters = kernel.get_hyperparameters()
        kernel.set_hyperparameters({name: value * (1.0 + 0.3 * i) for name, value in hyperparameters.items()
                                    if name == "outputscale" or name.startswith("lengthscale")})
    d = len(kernels[0].ir.features)
    stack = stack_frozen([kernel.frozen() for kernel in kernels])
    x1 = points((), 4, d, 1, torch.float64).requires_grad_(True)
    x2 = points((), 6, d, 2, torch.float64)
    value = stack(x1, x2)
    assert value.shape == (3, 4, 6)
    if fused_threshold == 0:
        assert kernels[0].last_path == "cpu"
    weights = torch.arange(1.0, 4.0, dtype=torch.float64).reshape(3, 1, 1)
    (gradient,) = torch.autograd.grad((weights * value.square()).sum(), x1)
    x1_ = x1.detach().clone().requires_grad_(True)
    expected = torch.stack([kernel.frozen()(x1_, x2) for kernel in kernels])
    (expected_gradient,) = torch.autograd.grad((weights * expected.square()).sum(), x1_)
    assert_close(value, expected, 1e-12, "stacked values")
    assert_close(gradient, expected_gradient, 1e-10, "stacked input gradients")
    assert not torch.allclose(value[0], value[1])
    other = kd.compile("matern52({a, b})", ["a", "b"], backend="auto").double()
    assert stack_frozen([kernels[0].frozen(), other.frozen()]) is None


def test_auto_falls_back_to_torch_with_one_warning_when_nothing_compiles(tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "FUSED_CPU_THRESHOLD", 1)
    monkeypatch.setattr(auto, "_cpu_unavailable", None)
    monkeypatch.setattr(c_kernel, "_kernels", {})  # nothing compiled yet in this process
    monkeypatch.setenv("KERNELDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    kernel = _kernel("fixed_weights", backend="auto")
    x = torch.rand(4, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="fused CPU kernels are off in this process"):
        first = kernel(x).to_dense()
    assert kernel.last_path == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel(x).to_dense()  # no second warning
    assert_close(first, _kernel("fixed_weights", backend="torch")(x).to_dense(), 1e-12, "fallback values")


def test_an_unwritable_cache_falls_back_to_a_private_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("KERNELDSL_CACHE_DIR", str(blocked))
    ir = kd.compile_ir(*CANONICAL["single_term"])
    kernels = CpuKernels(ir, generate(ir), "x")
    x = torch.rand(1, 3, 2, dtype=torch.float64)
    one = torch.ones(1, 2, dtype=torch.float64)
    out = kernels.forward(x, x, one, one[:, :0].contiguous(), torch.ones(1, dtype=torch.float64), True)
    assert out.shape == (1, 3, 3) and torch.allclose(out.diagonal(dim1=-2, dim2=-1), torch.ones(1, 3, dtype=torch.float64))
