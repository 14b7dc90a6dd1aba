"""Shared pytest set-up: make tests/ importable (strategies, harness) and a one-thread fixture."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: OpenMP worker threads on busy shared cores cost milliseconds per op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
