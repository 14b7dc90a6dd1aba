"""Random kernel programs (source text, hypothesis): every backend equals ``reference``.

Values and gradients in float64, batched and unbatched, diag included; the matrix
is symmetric and positive definite up to a small jitter.
"""

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerneldsl as kd
from harness import assert_backends_agree, build_kernels, evaluate, random_hyperparameters
from strategies import programs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _ir(program):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kd.KernelWarning)
        return kd.compile_ir(program.source, program.features, program.groups)


@SETTINGS
@given(programs(), st.sampled_from([(), (2,)]), st.integers(0, 2**16))
def test_torch_equals_reference_on_random_programs(program, batch, seed):
    ir = _ir(program)
    g = torch.Generator().manual_seed(seed)
    d = len(ir.features)
    x1 = torch.rand(*batch, 6, d, generator=g, dtype=torch.float64)
    x2 = torch.rand(*batch, 4, d, generator=g, dtype=torch.float64)
    x1[..., 1, :] = x1[..., 0, :]  # a repeated point: distance zero inside x1
    assert_backends_agree(ir, x1, x2, batch_shape=torch.Size(batch), seed=seed, rtol=1e-10)


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_random_program_matrix_is_a_covariance(program, seed):
    ir = _ir(program)
    kernels = build_kernels(ir, backends=("torch",))
    kernel = kernels["torch"]
    g = torch.Generator().manual_seed(seed)
    kernel.set_hyperparameters(random_hyperparameters(kernel, g))
    x = torch.rand(12, len(ir.features), generator=g, dtype=torch.float64)
    with torch.no_grad():
        K = evaluate(kernel, x)
    assert torch.equal(K, K.transpose(-1, -2))
    jitter = 1e-8 * K.diagonal().mean()
    torch.linalg.cholesky(K + jitter * torch.eye(12, dtype=K.dtype))


@SETTINGS
@given(programs(), st.sampled_from([(), (3,)]), st.booleans(), st.integers(0, 2**16))
def test_frozen_torch_kernel_equals_reference_values_and_input_gradients(program, batch, diag, seed):
    """``frozen()`` (hyperparameters prepared once) gives the reference kernel's values and input gradients, with
    the hyperparameters it had when frozen; tiled evaluation included (tile threshold 1)."""
    ir = _ir(program)
    g = torch.Generator().manual_seed(seed)
    kernels = build_kernels(ir, backends=("reference", "torch"))
    values = random_hyperparameters(kernels["torch"], g)
    for kernel in kernels.values():
        kernel.set_hyperparameters(values)
        kernel.requires_grad_(False)
    tiled = build_kernels(ir, backends=("torch",), options=kd.KernelOptions(tile_threshold=1, tile_size=4))["torch"]
    tiled.set_hyperparameters(values)
    d = len(ir.features)
    x1 = torch.rand(*batch, 5, d, generator=g, dtype=torch.float64)
    x2 = x1.clone() if diag else torch.rand(7, d, generator=g, dtype=torch.float64)
    expected_x1 = x1.clone().requires_grad_(True)
    expected = evaluate(kernels["reference"], expected_x1, x2, diag=diag)
    # + 0 * x1: a diagonal of a stationary kernel does not depend on the inputs
    (expected_gradient,) = torch.autograd.grad(expected.square().sum() + 0 * expected_x1.sum(), expected_x1)
    for kernel in (kernels["torch"], tiled):
        frozen = kernel.frozen()
        for _ in range(2):  # the prepared hyperparameters are reused
            got_x1 = x1.clone().requires_grad_(True)
            got = frozen(got_x1, x2, diag=diag)
            (got_gradient,) = torch.autograd.grad(got.square().sum() + 0 * got_x1.sum(), got_x1)
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(got_gradient, expected_gradient, rtol=1e-9, atol=1e-11)
