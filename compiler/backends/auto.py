"""The ``auto`` backend: the torch kernel, with the fused paths taken where they pay.

One module and one set of hyperparameters for every path, so a model moved between
CPU and GPU keeps its state:

- ``triton``: inputs on a CUDA device, and triton imports;
- ``cpu`` (fused C kernels, ``c_kernel``): CPU inputs whose K has at least
  ``FUSED_CPU_THRESHOLD`` entries (or the kernel's ``fused_threshold`` option), when a C
  compiler works here (checked once per process; without one the torch path runs, with one
  warning);
- ``torch`` otherwise (and for ``last_dim_is_batch``).

``last_path`` records which path the latest forward took (tests and benchmarks check it).
"""

from __future__ import annotations

import math
import warnings

import torch

from ..errors import KernelError
from ..ir import KernelIR
from ..options import KernelOptions
from ..shapes import broadcast_shapes
from .common import check_inputs
from .tiling import AUTO
from .torch_kernel import TorchKernel

FUSED_CPU_THRESHOLD = 2**16
"""Kernel entries (n * m times batch elements; n for diag) from which ``auto`` runs the fused C kernels on
the CPU. They were faster at every size measured (hands-on MNIST kernel, float64, forward+backward, one
thread: n = 40 1.7x, 100 2.4x, 256 3.6x, 381 3.7-4.4x, 2000 6x; benchmarks/RESULTS.md), but a kernel's
first use compiles it (0.5-8 s, then cached on disk): below about 256 x 256 a fit's kernel time is small next to
gpytorch's own overhead, so small models (and the test suite's many tiny kernels) skip the compiler."""

_cpu_unavailable: str | None = None
"""Why the fused CPU path failed in this process (set once; later forwards go straight to torch)."""


class AutoKernel(TorchKernel):
    """A ``TorchKernel`` whose forward runs the generated fused kernels where they pay (see the module docstring)."""

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(ir, batch_shape, options)
        self.last_path: str | None = None
        self.kernels = None  # the generated triton kernels, compiled at the first CUDA forward
        self._triton_ok: bool | None = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params) -> torch.Tensor:
        if not last_dim_is_batch and self.uses_fused_path(x1, x2, diag):
            check_inputs(self.ir, x1, x2, diag)
            out = self.fused(x1, x2, diag)
            if out is not None:
                return out
        self.last_path = "torch"
        return super().forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)

    def fused(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool,
              hyperparameters: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor | None:
        """K (or its diagonal) from the generated fused kernels, triton on CUDA and C on the CPU; None where the C
        kernels cannot be built here. Inputs must already have passed ``check_inputs`` (``forward`` and a frozen
        kernel check them once). ``hyperparameters``: `fused_hyperparameters` computed beforehand."""
        if x1.is_cuda:
            from .fused import fused_forward
            from .triton_kernel import current_kernels

            kernels = current_kernels(self)
            self.last_path = "triton"
            return fused_forward(self, kernels, kernels.blocks, x1, x2, diag, hyperparameters)
        out = self._fused_cpu(x1, x2, diag, hyperparameters)
        if out is not None:
            self.last_path = "cpu"
        return out

    def fused_hyperparameters(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the fused kernels read of the hyperparameters, in ``dtype`` and without gradients: the
        lengthscales, the softmaxed weights and the outputscale (for a frozen kernel)."""
        with torch.no_grad():
            return tuple(h.to(dtype) for h in self.fused_parameters())

    def uses_fused_path(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool) -> bool:
        """Whether ``forward`` would try the fused kernels for these inputs (triton on CUDA, C above the size)."""
        if x1.is_cuda:
            return self._triton_available()
        threshold = self.options.fused_threshold
        threshold = FUSED_CPU_THRESHOLD if threshold == AUTO else threshold
        return x1.device.type == "cpu" and _cpu_unavailable is None and _entries(self, x1, x2, diag) >= threshold

    def _fused_cpu(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool,
                   hyperparameters: tuple[torch.Tensor, ...] | None) -> torch.Tensor | None:
        """K from the fused C kernels; None when they cannot be built here (then once a warning)."""
        global _cpu_unavailable
        if _cpu_unavailable is not None:
            return None
        from .c_kernel import compiled_kernels
        from .fused import FUSED_DTYPES, compute_dtype, fused_forward

        kernels = compiled_kernels(self.ir)
        dtype = compute_dtype(self, x1, x2)
        if dtype not in FUSED_DTYPES:
            return None
        try:
            kernels.library(dtype)
        except KernelError as err:
            _cpu_unavailable = err.message
            warnings.warn(f"kerneldsl: the fused CPU kernels are off in this process, the torch path runs instead "
                          f"(slower for large kernels): {_cpu_unavailable.splitlines()[0]}", RuntimeWarning,
                          stacklevel=5)  # past _fused_cpu, fused, forward and gpytorch's __call__
            return None
        return fused_forward(self, kernels, None, x1, x2, diag, hyperparameters)

    def _triton_available(self) -> bool:
        """Whether triton imports here; asked once per kernel (a failed import is not cheap)."""
        if self._triton_ok is None:
            from .triton_kernel import triton_unavailable_reason

            self._triton_ok = triton_unavailable_reason() is None
        return self._triton_ok


def _entries(module: TorchKernel, x1: torch.Tensor, x2: torch.Tensor, diag: bool) -> int:
    """Entries of the kernel matrix (or diagonal) that this forward computes."""
    try:
        batch = broadcast_shapes(module.raw_outputscale.shape, x1.shape[:-2], x2.shape[:-2])  # the kernel's batch
    except RuntimeError:
        return 0  # the torch path raises the clear error
    return math.prod(batch) * x1.shape[-2] * (1 if diag else x2.shape[-2])


def build(ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
          options: KernelOptions | None = None) -> AutoKernel:
    """The ``auto`` backend's kernel for ``ir``."""
    return AutoKernel(ir, torch.Size(batch_shape), options)
