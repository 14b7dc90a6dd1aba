"""gpytorch's own kernel test case, ``BaseKernelTestCase``, on compiled kernels of every backend.

One ``unittest`` class per (backend, expression); each runs gpytorch's 13 tests unchanged
(batched and double-batched inputs and kernels, ``diag``, ``active_dims``, ``k[i]``,
``k[i, j]``, ``expand_batch`` with tensor indices, pickling, dtype and device).
The ``triton`` backend runs under Triton's CPU interpreter (``TRITON_INTERPRET=1``),
over the smallest expressions: the interpreter is slow.

Adapting gpytorch's fixtures to kernels over named features:

- gpytorch's "no ARD" kernel takes any number of input columns; a compiled kernel has
  one column per named feature (``x0, x1, ...``) and always one lengthscale per
  (term, feature). ``create_kernel_no_ard`` therefore builds over 2 features (the
  columns of gpytorch's batched data), or over ``len(active_dims)`` features when it is
  given ``active_dims``; the active-dims tests then build their unrestricted kernel for
  the same number of columns (``_num_dims`` remembers it for the rest of the test).
- Hyperparameters are random and differ between batch elements, so that the indexing
  tests compare different kernels, not copies of one.
"""

from __future__ import annotations

import importlib.util
import os
import unittest
from unittest import mock

import pytest
import torch
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase

import kerneldsl as kd
from harness import random_hyperparameters



def _set(names: list[str]) -> str:
    return "{" + ", ".join(names) + "}"


EXPRESSIONS = {
    "matern52": lambda f: f"matern52({_set(f)})",
    "product": lambda f: f"matern32({_set(f[:1])}) * rbf({_set(f[1:])})",
    "fj": lambda f: f"fj({_set(f)})",  # additive(f) + matern52(f): a learned-weight sum
}
"""Kernel source over the feature names ``f`` (at least two)."""

CASES = {
    "reference": ("matern52", "product", "fj"),
    "torch": ("matern52", "product", "fj"),
    "auto": ("matern52", "product", "fj"),
    "triton": ("matern52", "fj"),
    "cpu": ("matern52", "fj"),
}
"""The expressions each backend runs gpytorch's test case on."""

TRITON_MISSING = importlib.util.find_spec("triton") is None


class _CompiledKernelCase(BaseKernelTestCase):
    """gpytorch's kernel test case for ``kd.compile(EXPRESSIONS[expression](...), backend=backend)``."""

    seed = 0
    backend: str
    expression: str

    def setUp(self):
        super().setUp()
        self._num_dims = 2
        if self.backend == "triton":
            patch = mock.patch.dict(os.environ, {"TRITON_INTERPRET": "1"})
            patch.start()
            self.addCleanup(patch.stop)

    def create_kernel_no_ard(self, active_dims=None, batch_shape=torch.Size([])):
        if active_dims is not None:
            self._num_dims = len(active_dims)
        return self.create_kernel_ard(self._num_dims, active_dims=active_dims, batch_shape=batch_shape)

    def create_kernel_ard(self, num_dims, active_dims=None, batch_shape=torch.Size([])):
        features = [f"x{i}" for i in range(num_dims)]
        kernel = kd.compile(EXPRESSIONS[self.expression](features), features, backend=self.backend,
                            batch_shape=batch_shape)
        generator = torch.Generator().manual_seed(len(batch_shape) * 10 + num_dims)
        kernel.set_hyperparameters(random_hyperparameters(kernel, generator))
        if active_dims is not None:
            kernel.active_dims = torch.as_tensor(active_dims, dtype=torch.long)  # gpytorch's buffer
        return kernel


for _backend, _expressions in CASES.items():
    for _expression in _expressions:
        _name = f"Test{_backend.capitalize()}{_expression.capitalize()}"
        _case = type(_name, (_CompiledKernelCase, unittest.TestCase),
                     {"backend": _backend, "expression": _expression, "__module__": __name__})
        if _backend == "triton":
            _case = unittest.skipIf(TRITON_MISSING, "triton is not installed")(_case)
        globals()[_name] = _case
del _backend, _expressions, _expression, _name, _case
