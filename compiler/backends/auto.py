"""The ``auto`` backend: the torch kernel, with the fused triton path taken on CUDA inputs.

One module and one set of hyperparameters for both paths, so a model moved between
CPU and GPU keeps its state. The triton path is taken when the inputs are on a CUDA
device and triton imports; everything else (CPU, or no triton) runs the torch path.
``last_path`` records which path the latest forward took (tests and benchmarks check it).
"""

from __future__ import annotations

import torch

from ..ir import KernelIR
from ..options import KernelOptions
from .common import check_inputs
from .torch_kernel import TorchKernel


class AutoKernel(TorchKernel):
    """A ``TorchKernel`` whose forward runs generated triton kernels on CUDA tensors when it can."""

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(ir, batch_shape, options)
        self.last_path: str | None = None
        self.kernels = None  # the generated triton kernels, compiled at the first CUDA forward
        self._triton_ok: bool | None = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params) -> torch.Tensor:
        if x1.is_cuda and not last_dim_is_batch and self._triton_available():
            from .triton_kernel import current_kernels, fused_forward

            check_inputs(self.ir, x1, x2, diag)
            kernels = current_kernels(self)
            self.last_path = "triton"
            return fused_forward(self, kernels, kernels.blocks, x1, x2, diag)
        self.last_path = "torch"
        return super().forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)

    def _triton_available(self) -> bool:
        """Whether triton imports here; asked once per kernel (a failed import is not cheap)."""
        if self._triton_ok is None:
            from .triton_kernel import triton_unavailable_reason

            self._triton_ok = triton_unavailable_reason() is None
        return self._triton_ok


def build(ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
          options: KernelOptions | None = None) -> AutoKernel:
    """The ``auto`` backend's kernel for ``ir``."""
    return AutoKernel(ir, torch.Size(batch_shape), options)
