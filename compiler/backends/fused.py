"""The autograd side shared by the generated fused backends (``triton`` on CUDA, ``cpu`` on the CPU).

A backend's compiled kernels (``FusedKernels``) compute K (or its diagonal) of
flattened ``[B, n, d]`` inputs in one pass, and in backward recompute every pair
from dL/dK to write the gradients of the hyperparameters and inputs: nothing of
size terms x pairs is ever stored. ``fused_forward`` broadcasts a kernel module's
batch shape against the inputs' (gpytorch semantics), flattens it and calls
``FusedKernelFunction``. Softmax of the weight logits and the lengthscale and
outputscale constraints are applied in torch, outside the kernels, so autograd
chains through them.
"""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch.autograd.function import once_differentiable

from ..errors import KernelError
from ..ir import KernelIR
from ..options import KernelOptions
from ..shapes import broadcast_shapes
from .codegen import GeneratedSource
from .common import check_inputs
from .flat_params import FlatParameterKernel


@functools.lru_cache(maxsize=None)
def process_directory(prefix: str) -> Path:
    """A temporary directory of this process for generated files, removed at exit (one per prefix)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


class FusedKernels:
    """The compiled kernels of one IR, for flattened ``[B, ...]`` tensors; a backend subclasses it.

    ``x1 [B, n, d]``, ``x2 [B, m, d]``, ``ls [B, P]``, ``w [B, W]`` (softmaxed), ``scale [B]``;
    ``symmetric``: x2 is x1 (pass the same tensor). Backward returns
    ``(dL/dls [B, P], dL/dw [B, W], dL/dscale [B], dL/dx1 [B, n, F], dL/dx2 [B, m, F] or None)``
    with x gradients over the used features only (``used_features``); when symmetric,
    dL/dx1 holds the whole gradient of x and dL/dx2 is None.

    One object per IR and process, shared by every kernel module of that IR: copying returns
    the same object and unpickling looks it up (or regenerates it) with the backend's ``lookup``.
    """

    backend: str
    lookup: Callable[[KernelIR], "FusedKernels"]
    """The backend's per-process cache: IR -> its kernels (a module-level function, so it pickles)."""

    def __init__(self, ir: KernelIR, generated: GeneratedSource):
        self.ir = ir
        self.generated = generated
        self._used: dict[torch.device, torch.Tensor] = {}

    @property
    def source(self) -> str:
        return self.generated.source

    def __deepcopy__(self, memo) -> "FusedKernels":
        return self

    def __reduce__(self):
        return type(self).lookup, (self.ir,)

    def used_features(self, device: torch.device) -> torch.Tensor:
        """Column indices of the features the kernel uses, on ``device`` (copied there once)."""
        used = self._used.get(device)
        if used is None:
            used = self._used[device] = torch.tensor(self.generated.used_features, dtype=torch.long, device=device)
        return used

    def split_gradients(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed parameter gradients ``[B, P + W + 1]`` -> (lengthscales [B, P], weights [B, W], outputscale [B])."""
        P = self.generated.num_lengthscales
        return g[:, :P], g[:, P:-1], g[:, -1]

    def forward(self, x1, x2, ls, w, scale, symmetric: bool, config: Any) -> torch.Tensor:
        raise NotImplementedError

    def forward_diag(self, x1, x2, ls, w, scale, config: Any) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, grad, x1, x2, ls, w, scale, symmetric: bool, with_x_grad: bool, config: Any) -> tuple:
        raise NotImplementedError

    def backward_diag(self, grad, x1, x2, ls, w, scale, with_x_grad: bool, config: Any) -> tuple:
        raise NotImplementedError


def _scatter_features(g: torch.Tensor, used: torch.Tensor, d: int) -> torch.Tensor:
    """[B, n, F] gradient over the used features -> [B, n, d] with zeros elsewhere."""
    full = g.new_zeros(*g.shape[:-1], d)
    return full.index_copy_(-1, used, g)


class FusedKernelFunction(torch.autograd.Function):
    """K = scale * k(x1, x2) (or its diag) with a backend's fused kernels; x2 None means x1 is x2."""

    @staticmethod
    def forward(ctx, kernels: FusedKernels, config: Any, diag: bool, x1, x2, lengthscale, weights, scale):
        symmetric = x2 is None
        x2_ = x1 if symmetric else x2
        if diag:
            out = kernels.forward_diag(x1, x2_, lengthscale, weights, scale, config)
        else:
            out = kernels.forward(x1, x2_, lengthscale, weights, scale, symmetric, config)
        ctx.save_for_backward(x1, x2, lengthscale, weights, scale)
        ctx.kernels, ctx.config, ctx.diag, ctx.symmetric = kernels, config, diag, symmetric
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x1, x2, lengthscale, weights, scale = ctx.saved_tensors
        kernels, config = ctx.kernels, ctx.config
        x2_ = x1 if ctx.symmetric else x2
        with_x = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        if ctx.diag:
            g_ls, g_w, g_s, gx1, gx2 = kernels.backward_diag(grad, x1, x2_, lengthscale, weights, scale,
                                                             with_x, config)
        else:
            g_ls, g_w, g_s, gx1, gx2 = kernels.backward(grad, x1, x2_, lengthscale, weights, scale,
                                                        ctx.symmetric, with_x, config)
        needs = ctx.needs_input_grad  # the scatters only for inputs that want their gradient
        if with_x:
            used = kernels.used_features(x1.device)
            d = x1.size(-1)
            gx1 = _scatter_features(gx1, used, d) if needs[3] else None
            gx2 = _scatter_features(gx2, used, d) if gx2 is not None and needs[4] else None
        return None, None, None, gx1, gx2, g_ls, g_w, g_s


FUSED_DTYPES = (torch.float32, torch.float64)
"""What the fused kernels compute in."""


def compute_dtype(module: FlatParameterKernel, x1: torch.Tensor, x2: torch.Tensor) -> torch.dtype:
    """The dtype of K: the inputs' and the hyperparameters' promoted."""
    return torch.promote_types(torch.promote_types(x1.dtype, x2.dtype), module.raw_lengthscale.dtype)


def fused_forward(module: FlatParameterKernel, kernels: FusedKernels, config: Any,
                  x1: torch.Tensor, x2: torch.Tensor, diag: bool,
                  hyperparameters: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``module``'s kernel matrix (or diagonal) computed by the fused ``kernels``, with gpytorch batching.

    The kernel's batch shape is broadcast against the inputs' and flattened into ``B``.
    Inputs must already have passed ``check_inputs``. ``hyperparameters``: the module's
    ``fused_parameters()`` computed beforehand (a frozen kernel's, or several stacked), else read from the
    module.
    """
    symmetric = x1 is x2 and not diag  # the diag path is cheap; no symmetric special case
    dtype = compute_dtype(module, x1, x2)
    if dtype not in FUSED_DTYPES:
        raise KernelError(f"the {kernels.backend} backend computes in float32 or float64, not {dtype}")
    if x1.device != x2.device:
        raise KernelError(f"x1 and x2 must be on one device, got {x1.device} and {x2.device}")
    try:
        batch = broadcast_shapes(module.raw_outputscale.shape, x1.shape[:-2], x2.shape[:-2])  # shape: the kernel's batch
    except RuntimeError:
        raise KernelError(f"batch shapes do not broadcast: kernel {tuple(module.raw_outputscale.shape)}, "
                          f"x1 {tuple(x1.shape[:-2])}, x2 {tuple(x2.shape[:-2])}") from None
    ir = module.ir
    n, m, d = x1.size(-2), x2.size(-2), x1.size(-1)
    P, W, B = ir.num_lengthscales, ir.num_weights, math.prod(batch)
    if hyperparameters is None:
        hyperparameters = module.fused_parameters()
    lengthscale, weights, outputscale = (h.to(dtype) for h in hyperparameters)
    ls = lengthscale.expand(*batch, P).reshape(B, P).contiguous()
    w = weights.expand(*batch, W).reshape(B, W).contiguous()
    scale = outputscale.expand(batch).reshape(B).contiguous()
    shape = (*batch, n) if diag else (*batch, n, m)
    if n == 0 or m == 0 or B == 0:
        return x1.new_zeros(shape, dtype=dtype)
    flat1 = x1.to(dtype).expand(*batch, n, d).reshape(B, n, d)
    flat2 = None if symmetric else x2.to(dtype).expand(*batch, m, d).reshape(B, m, d)
    return FusedKernelFunction.apply(kernels, config, diag, flat1, flat2, ls, w, scale).reshape(shape)


class FusedKernel(FlatParameterKernel):
    """The kernel of one KernelIR evaluated by a backend's fused generated ``kernels``; a backend subclasses it."""

    def __init__(self, ir: KernelIR, kernels: FusedKernels, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(ir, batch_shape=batch_shape, options=options)
        self.kernels = kernels

    @property
    def generated_source(self) -> str:
        """The source of the generated kernels (for reading and debugging)."""
        return self.kernels.source

    def launch(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[FusedKernels, Any]:
        """The kernels to run on these inputs and their launch configuration (KernelError: not here)."""
        raise NotImplementedError

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params) -> torch.Tensor:
        check_inputs(self.ir, x1, x2, diag, last_dim_is_batch)
        kernels, config = self.launch(x1, x2)
        return fused_forward(self, kernels, config, x1, x2, diag)
