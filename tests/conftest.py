"""Shared pytest set-up: make tests/ importable (strategies, harness) and run everything on one thread.

The suite fits many tiny models: torch's intra-op threads cost more than they give there, and on a
small shared machine an OpenMP worker waiting for a busy core costs milliseconds per op (a batched
the three botorch fits of test_botorch took 129 s on 2 threads and 11 s on 1). The environment variable reaches the
subprocesses too (README snippets, CLI runs, process pools, Dask workers); a caller's own
``OMP_NUM_THREADS`` wins.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
sys.path.insert(0, str(Path(__file__).parent))

