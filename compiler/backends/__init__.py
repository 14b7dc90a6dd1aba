"""Backends: each builds a gpytorch Kernel from the intermediate form (never from the source).

Every backend module has ``build(ir, batch_shape, options) -> Kernel``; modules are
imported lazily so that an optional dependency (triton) is only needed when used.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..errors import KernelError, did_you_mean

BACKENDS: dict[str, str] = {
    "reference": ".reference",
    "torch": ".torch_kernel",
    "triton": ".triton_kernel",
    "cpu": ".c_kernel",
    "auto": ".auto",
}
"""Backend name -> module (relative to this package) that defines ``build``."""


def get_backend(name: str) -> Callable:
    """The ``build`` function of the backend called ``name``."""
    if name not in BACKENDS:
        raise KernelError(f"unknown backend '{name}'",
                          hint=did_you_mean(name, BACKENDS) or f"known backends: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name], __name__).build
