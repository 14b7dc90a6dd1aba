"""``kd.compile``: kernel-language source -> a gpytorch Kernel on the chosen backend."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .compiler.backends import get_backend
from .compiler.ir import KernelIR
from .compiler.lower import compile_ir
from .compiler.options import KernelOptions



def compile(source: str, features: Sequence[str], groups: Mapping[str, Sequence[str]] | None = None,
            backend: str = "auto", batch_shape: torch.Size | Sequence[int] = torch.Size([]), **options):
    """Compile a kernel expression into a ``gpytorch.kernels.Kernel``.

    ``features`` names the input columns (the last dimension of the inputs),
    ``groups`` maps group names to lists of feature names, ``backend`` is one of
    ``"reference"`` (plain gpytorch modules), ``"torch"`` (vectorised),
    ``"triton"`` (fused GPU kernels) or ``"auto"`` (the fastest available for the
    inputs' device). ``options`` are ``KernelOptions`` fields (priors, constraints, tiling).
    The kernel has ``hyperparameters()``, ``set_hyperparameters()`` and ``describe()``.
    Raises ``KernelError`` for any bad input.
    """
    ir = compile_ir(source, features, groups)
    return build(ir, backend=backend, batch_shape=batch_shape, **options)


def build(ir: KernelIR, backend: str = "auto", batch_shape: torch.Size | Sequence[int] = torch.Size([]),
          **options):
    """Build a kernel from an already lowered ``KernelIR`` (what ``compile`` does after lowering)."""
    opts = KernelOptions.from_kwargs(options)
    return get_backend(backend)(ir, torch.Size(batch_shape), opts)
