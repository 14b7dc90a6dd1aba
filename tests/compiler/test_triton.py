"""What only the ``triton`` backend has: real CUDA kernels, the interpreter switch, a missing triton.

Its values and gradients against ``reference`` are checked with the ``cpu`` backend's in
``test_fused.py`` (under Triton's CPU interpreter); the CUDA test here runs the same
checks with compiled kernels when a GPU is present.
"""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("triton")

import kerneldsl as kd  # noqa: E402
from kerneldsl.compiler.backends.triton_codegen import generate  # noqa: E402
from fused_harness import CANONICAL, FUSED, check_against_reference  # noqa: E402


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled Triton kernels need a CUDA device")
@pytest.mark.parametrize("mode", ["full", "symmetric", "diag"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_kernels_on_cuda_match_reference(mode, dtype, monkeypatch):
    """The fused harness's checks with real compiled kernels (default tiles, several of them at n=70)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ir = kd.compile_ir(*CANONICAL["all_kinds"])
    check_against_reference(FUSED["triton"], ir, mode, dtype, (3,), seed=8, n=70, m=45, device="cuda")


def test_generated_source_is_python():
    source = generate(kd.compile_ir(*CANONICAL["all_kinds"])).source
    assert "# feature 5: r2" in source
    compile(source, "generated", "exec")


def test_cpu_tensors_without_interpreter_are_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    kernel = kd.compile(*CANONICAL["single_term"], backend="triton")
    with pytest.raises(kd.KernelError, match="TRITON_INTERPRET=1"):
        kernel(torch.rand(3, 2), torch.rand(4, 2)).to_dense()


def test_missing_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(kd.KernelError, match="triton cannot be imported"):
        kd.compile(*CANONICAL["single_term"], backend="triton")
