"""Every ``kerneldsl`` command of README.md runs as written (see tests/readme_blocks.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from readme_blocks import COMMANDS, scratch_checkout


def test_the_readme_has_commands():
    names = {argv[1] for _, argv in COMMANDS}
    assert {"explain", "features", "cv", "fit", "bench"} <= names, names
    bench = next(argv for _, argv in COMMANDS if argv[1] == "bench")
    assert bench[-7:] == ["--n", "40", "--batch", "1,2", "--repeats", "1", "--no-memory"]  # sized down


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS], ids=[name for name, _ in COMMANDS])
def test_command_runs_as_written(argv, tmp_path):
    checkout = scratch_checkout(tmp_path, " ".join(argv))
    script = Path(sys.executable).with_name("kerneldsl")  # the console script installed beside this Python
    command = [str(script), *argv[1:]] if script.exists() else [sys.executable, "-m", "kerneldsl.cli", *argv[1:]]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"command failed: {shlex.join(argv)}\n--- stderr ---\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr and run.stdout.strip(), run.stderr[-3000:]
