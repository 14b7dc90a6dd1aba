"""Every Python snippet of README.md runs as written (see tests/readme_blocks.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from readme_blocks import SNIPPETS, scratch_checkout


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 5, [name for name, _ in SNIPPETS]


@pytest.mark.parametrize("code", [code for _, code in SNIPPETS], ids=[name for name, _ in SNIPPETS])
def test_snippet_runs_as_written(code, tmp_path):
    checkout = scratch_checkout(tmp_path, code)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(checkout)}
    run = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{run.stderr[-3000:]}"
