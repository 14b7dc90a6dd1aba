"""pytest-benchmark view of the backend comparison: the hands-on MNIST kernel, n=381, float64, CPU.

Not part of the test suite (``testpaths`` is ``tests/``); run it with

    .venv/bin/python -m pytest benchmarks/test_bench_backends.py --benchmark-group-by=param:workload

and compare ``reference`` and ``torch`` rows within one group. ``benchmarks/backends.py``
prints the same comparison as one table with ratios and peak memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import WORKLOADS, hands_on_ir, make_step  # noqa: E402

N = 381


@pytest.fixture(scope="module")
def ir():
    return hands_on_ir()


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_forward_backward(benchmark, ir, backend, workload):
    _, forward_backward = make_step(ir, backend, workload, N, torch.float64, "cpu")
    benchmark.pedantic(forward_backward, rounds=10, warmup_rounds=1)
