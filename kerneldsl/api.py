"""``kd.compile``: kernel-language source -> a gpytorch Kernel on the chosen backend."""

from __future__ import annotations

import reprlib
from typing import Mapping, Sequence

import torch

from .compiler.backends import get_backend
from .compiler.errors import KernelError
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
    The kernel has ``get_hyperparameters()`` (readable name -> value), ``set_hyperparameters()``
    and ``describe()``; ``hyperparameters()`` is gpytorch's generator of raw parameters.
    Raises ``KernelError`` for any bad input.
    """
    ir = compile_ir(source, features, groups)
    return build(ir, backend=backend, batch_shape=batch_shape, **options)


def build(ir: KernelIR, backend: str = "auto", batch_shape: torch.Size | Sequence[int] = torch.Size([]),
          **options):
    """Build a kernel from an already lowered ``KernelIR`` (what ``compile`` does after lowering)."""
    opts = KernelOptions.from_kwargs(options)
    return get_backend(backend)(ir, _batch_shape(batch_shape), opts)


def _batch_shape(batch_shape) -> torch.Size:
    """``batch_shape=`` as a ``torch.Size``, or a ``KernelError`` naming the argument."""
    try:
        if isinstance(batch_shape, (str, bytes)) or any(isinstance(s, bool) for s in batch_shape):
            raise TypeError
        size = torch.Size(batch_shape)
    except (TypeError, ValueError, RuntimeError):
        raise KernelError("batch_shape must be a torch.Size or a list of non-negative ints, "
                          f"got {reprlib.repr(batch_shape)} ({type(batch_shape).__name__})",
                          hint="e.g. batch_shape=torch.Size([3]) or batch_shape=[3] for a batch of 3 kernels") from None
    if any(s < 0 for s in size):
        raise KernelError(f"batch_shape must not have negative sizes, got {tuple(size)}")
    return size
