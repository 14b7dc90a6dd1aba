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
